/**
 * What hooks see of a call: thin views over the contract's records with header look-ups.
 * The contract's 64-bit numbers (`call-id`, `deadline-ms`, `index`) are plain numbers here:
 * call ids count up from 1 in the gateway process and never come near 2^53.
 *
 * @module synapsor-plugin/info
 */

import { pairs } from './util.js';

function first(headers, name) {
    for (let i = 0; i < headers.length; i++) {
        if (headers[i].name === name) return headers[i].value;
    }
    return undefined;
}

function all(headers, name) {
    const out = [];
    for (let i = 0; i < headers.length; i++) {
        if (headers[i].name === name) out.push(headers[i].value);
    }
    return out;
}

/** A call before it is forwarded (the contract's `request-info`). */
export class Request {
    /** @param {object} info the contract's `request-info`, as the bindings give it */
    constructor(info) {
        /** @private */
        this._raw = info.metadata;
        /** @private */
        this._metadata = undefined;
        /** A number unique to this call in the gateway process. @type {number} */
        this.callId = Number(info.callId);
        /** The gRPC method path, `/package.Service/Method`. @type {string} */
        this.method = info.method;
        /** The `:authority` the client sent (empty when none). @type {string} */
        this.authority = info.authority;
        /** The client's address, `ip:port`. @type {string} */
        this.peer = info.peer;
        /**
         * Who the caller is, when an auth stage (`api_key`, `jwt`) or the client's TLS
         * certificate says so.
         * @type {string | undefined}
         */
        this.principal = info.principal ?? undefined;
        /**
         * Time left until the call's deadline (`grpc-timeout`), in milliseconds, when the
         * client set one.
         * @type {number | undefined}
         */
        this.deadlineMs = info.deadlineMs == null ? undefined : Number(info.deadlineMs);
    }

    /**
     * The request metadata as `[name, value]` pairs, names lower-case, in arrival order
     * (without the pseudo-headers, `te`, `content-type` and `grpc-timeout`). Built on first
     * use.
     *
     * @type {[string, string][]}
     */
    get metadata() {
        if (this._metadata === undefined) this._metadata = pairs(this._raw);
        return this._metadata;
    }

    /**
     * The first value of the metadata entry `name`.
     *
     * @param {string} name a lower-case name
     * @returns {string | undefined}
     */
    header(name) {
        return first(this._raw, name);
    }

    /**
     * Every value of the metadata entry `name`, in order (empty when there is none).
     *
     * @param {string} name a lower-case name
     * @returns {string[]}
     */
    headers(name) {
        return all(this._raw, name);
    }
}

/** A call whose status is known (the contract's `response-info`). */
export class Response {
    /** @param {object} info the contract's `response-info`, as the bindings give it */
    constructor(info) {
        /** @private */
        this._raw = info;
        /** @private */
        this._headers = undefined;
        /** @private */
        this._trailers = undefined;
        /** The same number `onRequest` saw. @type {number} */
        this.callId = Number(info.callId);
        /** The gRPC method path. @type {string} */
        this.method = info.method;
        /** The gRPC status code of the call (0 = OK). @type {number} */
        this.status = info.status;
        /** The status message (`grpc-message`), empty when there is none. @type {string} */
        this.message = info.message;
    }

    /**
     * The response headers the client received, as `[name, value]` pairs (without
     * `content-type`).
     *
     * @type {[string, string][]}
     */
    get headers() {
        if (this._headers === undefined) this._headers = pairs(this._raw.headers);
        return this._headers;
    }

    /**
     * The trailers, as `[name, value]` pairs (without `grpc-status` and `grpc-message`).
     *
     * @type {[string, string][]}
     */
    get trailers() {
        if (this._trailers === undefined) this._trailers = pairs(this._raw.trailers);
        return this._trailers;
    }

    /**
     * The first value of the response header `name`.
     *
     * @param {string} name a lower-case name
     * @returns {string | undefined}
     */
    header(name) {
        return first(this._raw.headers, name);
    }

    /**
     * The first value of the trailer `name`.
     *
     * @param {string} name a lower-case name
     * @returns {string | undefined}
     */
    trailer(name) {
        return first(this._raw.trailers, name);
    }
}

/** One whole gRPC message (the contract's `message`), one at a time, in stream order. */
export class Message {
    /** @param {object} msg the contract's `message`, as the bindings give it */
    constructor(msg) {
        /** The same number the call's `onRequest` and `onResponse` see. @type {number} */
        this.callId = Number(msg.callId);
        /** The gRPC method path. @type {string} */
        this.method = msg.method;
        /** The message's position in its direction of the stream: 0 for the first. @type {number} */
        this.index = Number(msg.index);
        /** Whether it travelled compressed (`data` is always decompressed). @type {boolean} */
        this.compressed = msg.compressed;
        /** The message's bytes (a serialized protobuf for most services). @type {Uint8Array} */
        this.data = msg.data;
    }
}
