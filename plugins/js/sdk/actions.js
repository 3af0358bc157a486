/**
 * What hooks answer: header changes, refusals, message replacements and status overrides.
 *
 * A hook returns `undefined` (go on unchanged), an array of header changes (`setHeader`,
 * `appendHeader`, `removeHeader`), or throws or returns a {@link Reject}. The adapter `serve`
 * builds turns these into the contract's variants (`wit/plugin.wit`).
 *
 * @module synapsor-plugin/actions
 */

import { bytes, headerRecords, text } from './util.js';

/**
 * A change to a header list (the contract's `header-op`), applied in order. Build one with
 * {@link setHeader}, {@link appendHeader} or {@link removeHeader}.
 *
 * @typedef {{ tag: 'set', val: { name: string, value: string } }
 *     | { tag: 'append', val: { name: string, value: string } }
 *     | { tag: 'remove', val: string }} HeaderOp
 */

/**
 * Replace every value of `name` (lower-case) with `value`; add it when absent.
 *
 * @param {string} name a lower-case header name, such as `x-env`
 * @param {string} value the value (a number or boolean is written as its text)
 * @returns {HeaderOp}
 * @throws {TypeError} when `name` or `value` is not text
 */
export function setHeader(name, value) {
    return { tag: 'set', val: { name: text(name, 'a header name'), value: text(value, 'a header value') } };
}

/**
 * Add one more value for `name`, keeping the existing ones.
 *
 * @param {string} name a lower-case header name
 * @param {string} value the value (a number or boolean is written as its text)
 * @returns {HeaderOp}
 * @throws {TypeError} when `name` or `value` is not text
 */
export function appendHeader(name, value) {
    return { tag: 'append', val: { name: text(name, 'a header name'), value: text(value, 'a header value') } };
}

/**
 * Remove every value of `name`.
 *
 * @param {string} name a lower-case header name
 * @returns {HeaderOp}
 * @throws {TypeError} when `name` is not text
 */
export function removeHeader(name) {
    return { tag: 'remove', val: text(name, 'a header name') };
}

/**
 * Ends the call with a gRPC status (1 to 16) and message; it never reaches an upstream.
 *
 * Throw it or return it from `onRequest` or a message hook. `trailers` are extra trailers
 * sent with the status (lower-case names; not `grpc-status`/`grpc-message`), as an object
 * `{ name: value }` or `[name, value]` pairs.
 *
 * @example
 * throw new Reject(Code.PERMISSION_DENIED, 'no access', { 'x-reason': 'policy' });
 */
export class Reject extends Error {
    /**
     * @param {number} code a gRPC status code, 1 to 16 (see `Code`)
     * @param {string} [message] the `grpc-message` text
     * @param {Record<string, string> | Iterable<[string, string]>} [trailers] extra trailers
     * @throws {TypeError} when a trailer name or value is not text
     */
    constructor(code, message = '', trailers = {}) {
        super(message);
        this.name = 'Reject';
        /** The gRPC status code. @type {number} */
        this.code = Number(code);
        /** The extra trailers, as `[name, value]` pairs. @type {[string, string][]} */
        this.trailers = headerRecords(trailers, 'trailer').map((h) => [h.name, h.value]);
    }

    /**
     * The contract's `reject` record.
     *
     * @returns {{ code: number, message: string, trailers: { name: string, value: string }[] }}
     */
    toWit() {
        return {
            code: this.code,
            message: this.message,
            trailers: this.trailers.map(([name, value]) => ({ name, value })),
        };
    }
}

/** A message hook's answer: replace the message with `data` (one whole message). */
export class Replace {
    /**
     * @param {Uint8Array | ArrayBuffer | number[]} data the new message's bytes (at most the
     *     plugin's `max_message_size`); a `Uint8Array` is used as it is, not copied
     * @throws {TypeError} when `data` is not bytes
     */
    constructor(data) {
        /** The new message. @type {Uint8Array} */
        this.data = bytes(data, 'Replace data');
    }
}

/** An `onResponse` answer: replace the status (0 to 16) and message the client gets. */
export class OverrideStatus {
    /**
     * @param {number} code a gRPC status code, 0 to 16 (see `Code`)
     * @param {string} [message] the new `grpc-message` (empty for none)
     */
    constructor(code, message = '') {
        /** @type {number} */
        this.code = Number(code);
        /** @type {string} */
        this.message = text(message, 'the status message');
    }
}
