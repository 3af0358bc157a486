/**
 * ext-authz (JavaScript): asks an external authorization service about every call, as
 * Envoy's `ext_authz` filter does, and caches its decisions in the plugin's shared state; the
 * same plugin as the Rust example (plugins/examples/ext-authz), same config and metric.
 *
 * It sends `CheckRequest { method = 1, principal = 2, repeated Header headers = 3 }` to
 * `method` on the upstream group `group`. OK lets the call through with the `CheckResponse`'s
 * headers set on it; another status ends the call with that status and message. Both are kept
 * for `cache_ttl_ms`. When the service cannot be asked, `on_error` decides: `deny` ends the
 * call with UNAVAILABLE `authorization service unavailable (<kind>)`, `allow` lets it through.
 *
 *     - wasm:
 *         name: authz
 *         path: plugins/build/ext_authz_js.wasm
 *         callouts: { groups: [authz], timeout: 200ms }
 *         config: { group: authz, method: /synapsor.test.v1.Authz/Check,
 *                   headers: [authorization], cache_ttl_ms: 5000, on_error: deny }
 */

import {
    CalloutError, Code, Level, Plugin, Reject, StateError, callout, log, metrics, serve, settings,
    state,
} from 'synapsor-plugin';

import { Decision, cacheKey, checkRequest, checkResponse, malformed } from './decision.js';

/** Python's `repr` of a config value, for the same messages as the Python example. */
const repr = (v) => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v));

class ExtAuthz extends Plugin {
    constructor(config) {
        super(config);
        const c = settings(config, {
            group: 'authz', method: '/synapsor.test.v1.Authz/Check',
            headers: ['authorization'], cache_ttl_ms: 5000, on_error: 'deny',
        });
        if (!c.group) {
            throw new Error('group must name an upstream group');
        }
        if (typeof c.method !== 'string' || !c.method.startsWith('/')) {
            throw new Error('method must be a path: /package.Service/Method');
        }
        if (c.on_error !== 'deny' && c.on_error !== 'allow') {
            throw new Error(`on_error must be deny or allow, not ${repr(c.on_error)}`);
        }
        c.headers = c.headers.map((h) => h.toLowerCase());
        this.c = c;
        this.decisions = new metrics.Counter(
            'ext_authz_decisions', 'Authorization decisions, by result and whether the cache answered',
            ['result', 'cache']);
    }

    onRequest(req) {
        const headers = [];
        for (const n of this.c.headers) {
            for (const v of req.headers(n)) headers.push([n, v]);
        }
        const key = this.c.cache_ttl_ms > 0 ? cacheKey(req.method, req.principal, headers) : null;
        let d = key ? cached(key) : null;
        if (d !== null) {
            this.decisions.inc([d.result(), 'hit']);
            return d.action();
        }
        try {
            d = this.ask(req.method, req.principal, headers);
        } catch (e) {
            if (!(e instanceof CalloutError)) throw e;
            this.decisions.inc(['error', 'miss']);
            // The detail (addresses, OS errors) goes to the gateway's log, not to clients.
            log(Level.WARN, `authorization service: ${e.message}`);
            if (this.c.on_error === 'deny') {
                throw new Reject(Code.UNAVAILABLE, `authorization service unavailable (${e.kind})`);
            }
            return undefined;
        }
        if (key) remember(key, d, this.c.cache_ttl_ms);
        this.decisions.inc([d.result(), 'miss']);
        return d.action();
    }

    /** The service's decision; throws a CalloutError when it could not be asked. */
    ask(method, principal, headers) {
        const message = checkRequest(method, principal, headers);
        let answer;
        try {
            answer = callout.call(this.c.group, this.c.method, message);
        } catch (e) {
            if (e instanceof CalloutError && e.kind === 'status') {
                return Decision.deny(e.toReject().code, e.detail);
            }
            throw e;
        }
        try {
            return Decision.allow(checkResponse(answer.message));
        } catch (e) {
            if (!malformed(e)) throw e;
            throw new CalloutError('invalid', `malformed CheckResponse: ${e.message}`);
        }
    }
}

/** The decision cached under `key`, if any (a state error counts as none). */
function cached(key) {
    let value;
    try {
        value = state.get(key);
    } catch (e) {
        if (!(e instanceof StateError)) throw e;
        log(Level.DEBUG, `decision cache not read: ${e.message}`);
        return null;
    }
    return value !== undefined ? Decision.decode(value) : null;
}

/** Keeps `d` for `ttlMs`; a state error is logged and otherwise ignored. */
function remember(key, d, ttlMs) {
    try {
        state.set(key, d.encode(), ttlMs);
    } catch (e) {
        if (!(e instanceof StateError)) throw e;
        log(Level.DEBUG, `decision not cached: ${e.message}`);
    }
}

export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(ExtAuthz);
