/**
 * The synapsor plugin SDK for JavaScript: write a gateway plugin as a class.
 *
 * ```js
 * import { Plugin, Code, Reject, serve, setHeader } from 'synapsor-plugin';
 *
 * class AddEnv extends Plugin {
 *     constructor(config) {               // the plugin's `config:` from the YAML, parsed JSON
 *         super(config);
 *         this.env = config?.env ?? 'prod';
 *     }
 *
 *     onRequest(req) {                      // undefined, an array of header changes, or a Reject
 *         if (req.header('x-tenant') === undefined) {
 *             throw new Reject(Code.INVALID_ARGUMENT, 'missing x-tenant');
 *         }
 *         return [setHeader('x-env', this.env)];
 *     }
 * }
 *
 * // what componentize-js builds the component from
 * export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(AddEnv);
 * ```
 *
 * `onRequest` and `onResponse` default to "go on unchanged" (the gateway still calls an
 * undefined `onResponse` unless the YAML says `on_response: false`), and the message hooks are
 * only called when the class defines them (the gateway then splits the call's stream into
 * messages). A hook may be `async` (the gateway
 * waits for it; callouts and state are synchronous, so few need to be). The contract is
 * `wit/plugin.wit` (`synapsor:plugin@0.2.1`, world `interceptor`); `plugins/js/build.sh`
 * bundles the app with esbuild (this SDK is the bare import `synapsor-plugin`) and builds a
 * component with componentize-js.
 *
 * @module synapsor-plugin
 */

import { OverrideStatus, Reject, Replace } from './actions.js';
import { Level, log, routeConsole } from './host.js';
import { Message, Request, Response } from './info.js';
import { describeType, formatError, jsType } from './util.js';

export { Code } from './code.js';
export { OverrideStatus, Reject, Replace, appendHeader, removeHeader, setHeader } from './actions.js';
export { Level, counterAdd, log, nowUnixNanos, properties, routeConsole } from './host.js';
export { Message, Request, Response } from './info.js';
export { CalloutError } from './callout.js';
export { StateError } from './state.js';
export { WireError } from './wire.js';
export * as callout from './callout.js';
export * as metrics from './metrics.js';
export * as state from './state.js';
export * as wire from './wire.js';

/**
 * A plugin: extend it, define the hooks you need, and `serve` the class.
 *
 * The constructor runs once per instance with the YAML `config:` parsed from JSON (`null`
 * when there is none); throwing there stops the plugin from loading, with `Name: message` of
 * the error in the gateway's log. A hook may throw or return a {@link Reject} where it may
 * refuse; any other exception is logged (with its stack) at error level and ends the instance
 * (a trap: the call gets the plugin's failure outcome, `on_error`).
 */
export class Plugin {
    /** @param {any} config the plugin's `config:`, parsed JSON (`null` when there is none) */
    constructor(config) {
        /** The config the plugin was given. */
        this.config = config;
    }

    /**
     * Before the call is forwarded.
     *
     * @param {Request} req the call
     * @returns {void | Iterable<import('./actions.js').HeaderOp> | Reject} `undefined` (go on
     *     unchanged), metadata changes, or a {@link Reject} (which it may also throw)
     */
    // eslint-disable-next-line no-unused-vars
    onRequest(req) {
        return undefined;
    }

    /**
     * Once the status is known.
     *
     * @param {Response} resp the call's status, headers and trailers
     * @returns {void | Iterable<import('./actions.js').HeaderOp> | OverrideStatus} `undefined`,
     *     changes to the trailers the client gets (to the headers, for a trailers-only
     *     response), or an {@link OverrideStatus}
     */
    // eslint-disable-next-line no-unused-vars
    onResponse(resp) {
        return undefined;
    }

    /**
     * Each request message, in order (only called when a subclass defines it).
     *
     * @param {Message} msg the message
     * @returns {void | Replace | Reject} `undefined` (pass it on as it came), a
     *     {@link Replace}, or a {@link Reject} (which it may also throw)
     */
    // eslint-disable-next-line no-unused-vars
    onRequestMessage(msg) {
        return undefined;
    }

    /**
     * Each response message, in order (only called when a subclass defines it), as
     * {@link Plugin#onRequestMessage}.
     *
     * @param {Message} msg the message
     * @returns {void | Replace | Reject}
     */
    // eslint-disable-next-line no-unused-vars
    onResponseMessage(msg) {
        return undefined;
    }
}

/**
 * `config` (an object, or `null`/`undefined` for none) over `defaults`, as a new object with
 * exactly the keys of `defaults`; a key of `config` that is not among them throws an `Error`
 * naming it (Rust's `deny_unknown_fields`): ``unknown config key `x`; expected one of `a`,
 * `b` ``, and so does a value of another kind than its default (``config key `limit` must
 * be a number, not a string``; a default of `null` takes anything). Keys keep the YAML's
 * spelling (`cache_ttl_ms`).
 *
 * @template {Record<string, any>} T
 * @param {any} config the parsed `config:`
 * @param {T} defaults every accepted key with its default value
 * @returns {T}
 * @throws {Error} when `config` is not an object or has a key `defaults` lacks
 */
export function settings(config, defaults) {
    const c = config ?? {};
    if (typeof c !== 'object' || Array.isArray(c)) {
        throw new Error(`config must be a map, not ${describeType(c)}`);
    }
    const unknown = Object.keys(c).filter((k) => !Object.hasOwn(defaults, k)).sort();
    if (unknown.length > 0) {
        throw new Error(`unknown config key \`${unknown[0]}\`; expected one of `
            + Object.keys(defaults).map((k) => `\`${k}\``).join(', '));
    }
    const out = {};
    for (const [k, v] of Object.entries(defaults)) {
        const given = Object.hasOwn(c, k) ? c[k] : v;
        if (v !== null && v !== undefined && kind(given) !== kind(v)) {
            throw new Error(`config key \`${k}\` must be ${kind(v)}, not ${kind(given)}`);
        }
        out[k] = given;
    }
    return out;
}

/** The YAML kind of a value: what `settings` compares a key's value with its default by. */
function kind(v) {
    if (v === null || v === undefined) return 'null';
    if (Array.isArray(v)) return 'a list';
    switch (typeof v) {
        case 'boolean': return 'a boolean';
        case 'number': case 'bigint': return 'a number';
        case 'string': return 'a string';
        case 'object': return 'a map';
        default: return typeof v;
    }
}

/** `Name: message` of what a constructor threw (the init error). */
function initError(e) {
    if (e instanceof Error) return `${e.name}: ${e.message}`;
    try {
        return String(e);
    } catch {
        return 'an exception';
    }
}

/** Logs what a hook threw, then throws it on: the instance traps. */
function fail(hook, e) {
    try {
        log(Level.ERROR, `${hook} threw: ${formatError(e)}`);
    } catch {
        // the log line is a courtesy; the trap is what matters
    }
    throw e;
}

function headerOps(answer, hook) {
    if (answer == null) return [];
    if (typeof answer === 'string' || typeof answer[Symbol.iterator] !== 'function') {
        throw new TypeError(`${hook} answered ${jsType(answer)}; expected undefined, `
            + `header changes${hook === 'onRequest' ? ' or a Reject' : ' or an OverrideStatus'}`);
    }
    const ops = Array.isArray(answer) ? answer : Array.from(answer);
    for (const op of ops) {
        if (op === null || typeof op !== 'object'
            || (op.tag !== 'set' && op.tag !== 'append' && op.tag !== 'remove')) {
            throw new TypeError(`${hook} answered an array holding ${jsType(op)}; `
                + 'expected setHeader, appendHeader or removeHeader changes');
        }
    }
    return ops;
}

function requestAction(answer) {
    if (answer instanceof Reject) return { tag: 'reject', val: answer.toWit() };
    return { tag: 'continue', val: headerOps(answer, 'onRequest') };
}

function responseAction(answer) {
    if (answer instanceof OverrideStatus) {
        return { tag: 'override-status', val: { code: answer.code, message: answer.message } };
    }
    return { tag: 'continue', val: headerOps(answer, 'onResponse') };
}

function messageAction(hook) {
    return (answer) => {
        if (answer == null) return { tag: 'continue' };
        if (answer instanceof Replace) return { tag: 'replace', val: answer.data };
        if (answer instanceof Reject) return { tag: 'reject', val: answer.toWit() };
        throw new TypeError(`${hook} answered ${jsType(answer)}; `
            + 'expected undefined, a Replace or a Reject');
    };
}

const rejectAction = (r) => ({ tag: 'reject', val: r.toWit() });

/**
 * Runs a hook and converts its answer; a thrown Reject is an answer where `onReject` takes
 * one; anything else thrown (or a bad answer) is logged and thrown on. An async hook's
 * promise is followed the same way.
 */
function run(hook, call, convert, onReject) {
    const settle = (e) => (onReject && e instanceof Reject ? onReject(e) : fail(hook, e));
    const finish = (answer) => {
        try {
            return convert(answer);
        } catch (e) {
            return fail(hook, e);
        }
    };
    let answer;
    try {
        answer = call();
    } catch (e) {
        return settle(e);
    }
    if (answer !== null && typeof answer === 'object' && typeof answer.then === 'function') {
        return answer.then(finish, settle);
    }
    return finish(answer);
}

/**
 * The functions componentize-js exports (the world `interceptor`), serving an instance of
 * `PluginClass`:
 *
 * ```js
 * export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(MyPlugin);
 * ```
 *
 * `init` routes `console` to the gateway's log, parses the config JSON, constructs the plugin
 * (an exception becomes the init error `Name: message`) and asks for the message hooks the
 * instance defines.
 *
 * @param {new (config: any) => Plugin} PluginClass the plugin class (usually extending
 *     {@link Plugin})
 * @returns {{ init: (config: string) => any, onRequest: (info: any) => any,
 *     onResponse: (info: any) => any, onRequestMessage: (msg: any) => any,
 *     onResponseMessage: (msg: any) => any }}
 */
export function serve(PluginClass) {
    /** @type {Plugin | null} */
    let plugin = null;
    const defines = (name) => typeof plugin[name] === 'function' && plugin[name] !== Plugin.prototype[name];
    const hook = (name, arg) => (typeof plugin[name] === 'function' ? plugin[name](arg) : undefined);
    const onRequestMessage = messageAction('onRequestMessage');
    const onResponseMessage = messageAction('onResponseMessage');

    return {
        init(config) {
            routeConsole();
            try {
                plugin = new PluginClass(JSON.parse(config));
            } catch (e) {
                plugin = null;
                return { tag: 'err', val: initError(e) };
            }
            return {
                tag: 'ok',
                val: {
                    requestMessages: defines('onRequestMessage'),
                    responseMessages: defines('onResponseMessage'),
                },
            };
        },
        onRequest(info) {
            return run('onRequest', () => hook('onRequest', new Request(info)), requestAction, rejectAction);
        },
        onResponse(info) {
            return run('onResponse', () => hook('onResponse', new Response(info)), responseAction, null);
        },
        onRequestMessage(msg) {
            return run('onRequestMessage', () => hook('onRequestMessage', new Message(msg)),
                onRequestMessage, rejectAction);
        },
        onResponseMessage(msg) {
            return run('onResponseMessage', () => hook('onResponseMessage', new Message(msg)),
                onResponseMessage, rejectAction);
        },
    };
}
