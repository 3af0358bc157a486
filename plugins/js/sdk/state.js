/**
 * The plugin's key-value store (contract 0.2.1 `state`): byte values with expiry, shared by
 * every instance on every worker (and by replicas, with Redis). Keys are at most 256 bytes,
 * values at most the plugin's `state.max_value_size`. Failures throw {@link StateError}.
 *
 * ```js
 * import { state } from 'synapsor-plugin';
 * state.set('seen:' + id, new Uint8Array([1]), 60_000);
 * const v = state.get('seen:' + id);  // a Uint8Array, or undefined
 * state.delete('seen:' + id);
 * ```
 *
 * @module synapsor-plugin/state
 */

import * as wit from 'synapsor:plugin/state@0.2.1';

import { bytes, optionalU64 } from './util.js';

/**
 * Why a state operation failed: `kind` is `too-large` (the key or value is over its bound;
 * `detail` says which), `full` (the store holds `max_entries` keys or `max_bytes` already) or
 * `unavailable` (Redis could not be asked and `state.on_redis_error` is `fail`). The error's
 * `message` is `kind: detail` (or `kind`).
 */
export class StateError extends Error {
    /**
     * @param {'too-large' | 'full' | 'unavailable'} kind
     * @param {string} [detail]
     */
    constructor(kind, detail = '') {
        super(detail ? `${kind}: ${detail}` : kind);
        this.name = 'StateError';
        /** @type {string} */
        this.kind = kind;
        /** @type {string} */
        this.detail = detail;
    }
}

function stateError(e) {
    if (e === null || typeof e !== 'object' || !Object.prototype.hasOwnProperty.call(e, 'payload')) {
        return e;
    }
    const v = e.payload;
    return new StateError(v.tag, v.val ?? '');
}

function optionalBytes(value, what) {
    return value == null ? undefined : bytes(value, what);
}

/**
 * The value of `key`.
 *
 * @param {string} key at most 256 bytes
 * @returns {Uint8Array | undefined} the value, or `undefined` when it is absent or expired
 * @throws {StateError}
 */
export function get(key) {
    try {
        return wit.get(key) ?? undefined;
    } catch (e) {
        throw stateError(e);
    }
}

/**
 * Sets `key` to `value`, expiring after `ttlMs` milliseconds.
 *
 * @param {string} key at most 256 bytes
 * @param {Uint8Array | ArrayBuffer | number[]} value at most `state.max_value_size` bytes
 * @param {number | bigint} [ttlMs] time to live in milliseconds (at most 365 days; longer is
 *     taken as that); `undefined`/`null`: kept until deleted
 * @returns {void}
 * @throws {StateError} when the store refuses it
 * @throws {TypeError | RangeError} when `value` is not bytes or `ttlMs` not an integer ≥ 0
 */
export function set(key, value, ttlMs) {
    const v = bytes(value, 'a state value');
    const ttl = optionalU64(ttlMs, 'ttlMs');
    try {
        wit.set(key, v, ttl);
    } catch (e) {
        throw stateError(e);
    }
}

/**
 * Deletes `key` (exported as `delete`).
 *
 * @param {string} key
 * @returns {boolean} true when it was there
 * @throws {StateError}
 */
function del(key) {
    try {
        return wit.delete(key);
    } catch (e) {
        throw stateError(e);
    }
}
export { del as delete };

/**
 * Atomically: when the value of `key` is `expected` (`undefined`/`null`: the key is absent or
 * expired), sets it to `value` (`undefined`/`null`: deletes it) with `ttlMs` as in
 * {@link set}, and returns true; else changes nothing and returns false. Of racing swaps from
 * the same value exactly one wins (between instances, workers and, with Redis, replicas).
 *
 * @param {string} key
 * @param {Uint8Array | ArrayBuffer | number[] | null | undefined} expected
 * @param {Uint8Array | ArrayBuffer | number[] | null | undefined} value
 * @param {number | bigint} [ttlMs]
 * @returns {boolean} whether it swapped
 * @throws {StateError}
 */
export function compareAndSwap(key, expected, value, ttlMs) {
    const exp = optionalBytes(expected, 'the expected value');
    const v = optionalBytes(value, 'a state value');
    const ttl = optionalU64(ttlMs, 'ttlMs');
    try {
        return wit.compareAndSwap(key, exp, v, ttl);
    } catch (e) {
        throw stateError(e);
    }
}
