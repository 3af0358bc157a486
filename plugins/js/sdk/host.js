/**
 * The gateway's host functions: its log (also behind `console`, once `init` ran), counters
 * shared by every instance, the clock and the running call's properties.
 *
 * @module synapsor-plugin/host
 */

import * as host from 'synapsor:plugin/host@0.2.1';

import { MAX_I64, formatError } from './util.js';

/**
 * The severity of a log line (the contract's `level`).
 *
 * @readonly
 * @enum {string}
 */
export const Level = Object.freeze({
    TRACE: 'trace',
    DEBUG: 'debug',
    INFO: 'info',
    WARN: 'warn',
    ERROR: 'error',
});

/**
 * Writes a line to the gateway's log, tagged with the plugin's name (cut at 4 KiB; past 100
 * lines a second the gateway drops lines and says how many).
 *
 * @param {Level} level one of `Level`'s values (`'trace'` to `'error'`)
 * @param {string} message the line (anything else is written as `String(message)`)
 * @returns {void}
 * @throws {TypeError} when `level` is not a `Level`
 */
export function log(level, message) {
    host.log(level, typeof message === 'string' ? message : String(message));
}

/**
 * Adds `delta` to the plugin's counter `key` (shared by every instance of the plugin, kept
 * as long as the gateway process) and returns its new value. Past 10,000 keys a new key counts
 * nothing and returns 0. Keys are at most 256 bytes.
 *
 * A negative `delta` throws a `RangeError`: componentize-js 0.23 cannot pass a negative
 * 64-bit integer to the gateway (it ends the instance instead: bytecodealliance/ComponentizeJS
 * issue 343), so a JavaScript plugin's counters only go up.
 *
 * @param {string} key the counter's name
 * @param {number | bigint} [delta] an integer of 0 to 2^63 - 1; 1 by default
 * @returns {number} the new value (exact up to 2^53)
 * @throws {RangeError} when `delta` is not an integer of 0 to 2^63 - 1
 */
export function counterAdd(key, delta = 1) {
    const d = BigInt(delta);
    if (d < 0n || d > MAX_I64) {
        throw new RangeError(`counterAdd: delta must be 0 to 2^63 - 1, not ${String(delta)}`
            + ' (componentize-js cannot pass a negative 64-bit integer to the gateway)');
    }
    // An s64 comes back as the unsigned reading of its 64 bits.
    return Number(BigInt.asIntN(64, BigInt(host.counterAdd(key, d))));
}

/**
 * The wall-clock time, in nanoseconds since the Unix epoch.
 *
 * @returns {bigint}
 */
export function nowUnixNanos() {
    return host.nowUnixNanos();
}

/**
 * What the gateway knows of the call the running hook is for (the contract's
 * `call-properties`).
 *
 * @typedef {object} CallProperties
 * @property {string} listener the name of the listener the call came in on
 * @property {string | undefined} upstreamGroup the upstream group serving the call, known in
 *     `onResponse` and `onResponseMessage`
 * @property {string | undefined} upstreamEndpoint its endpoint (`host:port`), likewise
 * @property {bigint} startUnixNanos when the call reached this plugin's stage, in nanoseconds
 *     since the Unix epoch
 * @property {bigint} elapsedNanos time since then, in nanoseconds
 * @property {string | undefined} tlsServerName the SNI the client asked for, on a TLS listener
 * @property {string | undefined} clientIdentity the identity in the client's certificate, on a
 *     listener that verifies them
 */

/**
 * The running call's properties; `undefined` in `init` (the plugin's constructor).
 *
 * @returns {CallProperties | undefined}
 */
export function properties() {
    return host.properties() ?? undefined;
}

const CONSOLE_LEVELS = [
    ['error', Level.ERROR], ['warn', Level.WARN], ['info', Level.INFO], ['log', Level.INFO],
    ['debug', Level.DEBUG], ['trace', Level.TRACE],
];

function formatArg(arg) {
    if (typeof arg === 'string') return arg;
    if (arg instanceof Error) return formatError(arg);
    if (typeof arg === 'object' && arg !== null) {
        try {
            const json = JSON.stringify(arg, (_, v) => (typeof v === 'bigint' ? `${v}n` : v));
            if (json !== undefined) return json;
        } catch {
            // a cycle: fall back to String
        }
    }
    try {
        return typeof arg === 'bigint' ? `${arg}n` : String(arg);
    } catch {
        return Object.prototype.toString.call(arg);
    }
}

let routed = false;

/**
 * Routes `console.error`, `warn`, `info`, `log`, `debug` and `trace` to the gateway's log (at
 * `error`, `warn`, `info`, `info`, `debug` and `trace`), their arguments joined by spaces
 * (strings as they are, errors with their stack, objects as JSON). `serve`'s `init` calls it,
 * so `console.warn(...)` works in hooks as anywhere else; a failure to log never fails a hook.
 *
 * @returns {void}
 */
export function routeConsole() {
    if (routed) return;
    routed = true;
    for (const [method, level] of CONSOLE_LEVELS) {
        globalThis.console[method] = (...args) => {
            try {
                host.log(level, args.map(formatArg).join(' '));
            } catch {
                // logging must never fail a hook
            }
        };
    }
}
