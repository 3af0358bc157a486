/**
 * Unary gRPC calls to the gateway's upstream groups (contract 0.2.1 `callout`), through its
 * balancer, pools, TLS and health state: Envoy's `ext_authz`, proxy-wasm's
 * `dispatch_grpc_call`. The groups a plugin may call are listed in its YAML
 * (`callouts.groups`). Failures throw {@link CalloutError}.
 *
 * @module synapsor-plugin/callout
 */

import * as wit from 'synapsor:plugin/callout@0.2.1';

import { Code } from './code.js';
import { Reject } from './actions.js';
import { bytes, headerRecords, pairs } from './util.js';

/**
 * An OK answer.
 *
 * @typedef {object} Answer
 * @property {Uint8Array} message the response message's bytes (empty when the service sent
 *     none)
 * @property {[string, string][]} headers the response headers (without `content-type`)
 * @property {[string, string][]} trailers the trailers (without `grpc-status`,
 *     `grpc-message`)
 */

/**
 * Why a callout failed.
 *
 * `kind` is `not-allowed` (the group is not in `callouts.groups`, or the call was made in
 * `init`), `limited` (over `callouts.max_in_flight` or `max_per_hook`), `timeout`,
 * `unavailable` (the group could not be reached), `status` (the service answered `code` other
 * than OK, with `detail` its `grpc-message` and `trailers`) or `invalid` (a malformed request
 * or answer). `detail` says more (for the log: it may name addresses). The error's `message`
 * is `kind: detail` (or `kind`).
 */
export class CalloutError extends Error {
    /**
     * @param {'not-allowed' | 'limited' | 'timeout' | 'unavailable' | 'status' | 'invalid'} kind
     * @param {string} [detail] the text of the error; for `status`, the `grpc-message`
     * @param {number} [code] for `status`, the gRPC status code (1 to 16); else 0
     * @param {[string, string][]} [trailers] for `status`, the service's trailers
     */
    constructor(kind, detail = '', code = 0, trailers = []) {
        super(detail ? `${kind}: ${detail}` : kind);
        this.name = 'CalloutError';
        /** Why it failed. @type {string} */
        this.kind = kind;
        /** The error's text; for `status`, the service's `grpc-message`. @type {string} */
        this.detail = detail;
        /** For `status`, the gRPC status code; else 0. @type {number} */
        this.code = code;
        /** For `status`, the service's trailers as `[name, value]` pairs. @type {[string, string][]} */
        this.trailers = trailers;
    }

    /**
     * The service's status as this plugin's refusal (for a `status` error with a code of 1
     * to 16); any other kind is UNAVAILABLE `callout failed (<kind>)`.
     *
     * @returns {Reject}
     */
    toReject() {
        if (this.kind === 'status' && this.code >= 1 && this.code <= 16) {
            return new Reject(this.code, this.detail);
        }
        return new Reject(Code.UNAVAILABLE, `callout failed (${this.kind})`);
    }
}

function calloutError(e) {
    if (e === null || typeof e !== 'object' || !Object.prototype.hasOwnProperty.call(e, 'payload')) {
        return e;
    }
    const v = e.payload;
    switch (v.tag) {
        case 'status':
            return new CalloutError('status', v.val.message, v.val.code, pairs(v.val.trailers));
        case 'timeout':
            return new CalloutError('timeout');
        case 'not-allowed':
        case 'limited':
        case 'unavailable':
        case 'invalid':
            return new CalloutError(v.tag, v.val);
        default:
            return new CalloutError('invalid', String(v && v.tag));
    }
}

/**
 * Calls `method` on the upstream group `group` with one request `message` and waits for the
 * answer (the instance waits, the gateway's worker does not; the wait counts against
 * `callouts.timeout`, not the hook's CPU `timeout`). Not available in `init` (the plugin's
 * constructor).
 *
 * @param {string} group one of the plugin's `callouts.groups`
 * @param {string} method the gRPC method path, `/package.Service/Method`
 * @param {Uint8Array | ArrayBuffer | number[]} [message] the request message's bytes (a
 *     serialized protobuf, at most `max_message_size`); empty by default
 * @param {object} [options]
 * @param {Record<string, string> | Iterable<[string, string]>} [options.metadata] request
 *     metadata: lower-case names, no pseudo-headers, none of `te`, `content-type`,
 *     `grpc-timeout`, `grpc-encoding`
 * @param {number} [options.timeoutMs] the longest wait in milliseconds (never longer than
 *     `callouts.timeout` or the client's deadline, which are the default)
 * @returns {Answer}
 * @throws {CalloutError} when the call failed or the service answered a status other than OK
 * @throws {TypeError} when an argument has the wrong type
 */
export function call(group, method, message = new Uint8Array(), { metadata = {}, timeoutMs } = {}) {
    if (timeoutMs != null && !(Number.isInteger(timeoutMs) && timeoutMs >= 0 && timeoutMs <= 0xffffffff)) {
        throw new RangeError(`timeoutMs must be an integer of 0 to 2^32-1, not ${String(timeoutMs)}`);
    }
    const request = {
        group,
        method,
        metadata: headerRecords(metadata, 'metadata'),
        message: bytes(message, 'the callout message'),
        timeoutMs: timeoutMs ?? undefined,
    };
    let r;
    try {
        r = wit.call(request);
    } catch (e) {
        throw calloutError(e);
    }
    return { message: r.message, headers: pairs(r.headers), trailers: pairs(r.trailers) };
}
