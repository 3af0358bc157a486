/**
 * The messages ext-authz exchanges and keeps, in the protobuf wire format: the
 * `CheckRequest` it sends, the `CheckResponse` it reads, a call's cache key and a decision's
 * cached form (the same encodings as the Rust example's `decision.rs`).
 */

import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { Code, Reject, WireError, appendHeader, setHeader, wire } from 'synapsor-plugin';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Whether `e` is what malformed bytes throw (Python's ValueError): a WireError, or the
 * TypeError of a strict UTF-8 decode. */
export const malformed = (e) => e instanceof WireError || e instanceof TypeError;

/** Allow with headers to set, or deny with a status (1 to 16) and message. */
export class Decision {
    constructor(headers = [], code = 0, message = '') {
        this.headers = headers;
        this.code = code;
        this.message = message;
    }

    static allow(headers) {
        return new Decision(headers);
    }

    static deny(code, message) {
        return new Decision([], code, message);
    }

    /** `allow` or `deny`, the metric label. */
    result() {
        return this.code ? 'deny' : 'allow';
    }

    /** The first header of a name replaces the client's values (a client cannot forge
     * `x-authz-user`); later ones of that name are added. */
    action() {
        if (this.code) {
            const code = this.code >= 1 && this.code <= 16 ? this.code : Code.UNKNOWN;
            return new Reject(code, this.message);
        }
        const ops = [];
        const seen = new Set();
        for (const [name, value] of this.headers) {
            ops.push(seen.has(name) ? appendHeader(name, value) : setHeader(name, value));
            seen.add(name);
        }
        return ops;
    }

    /** `{ uint32 code = 1 (0: allow); string message = 2; repeated Header headers = 3 }`. */
    encode() {
        const w = new wire.Writer();
        if (this.code) {
            w.varint(1, this.code).string(2, this.message);
        } else {
            writeHeaders(w, 3, this.headers);
        }
        return w.finish();
    }

    /** The cached form read back; null when it is not that. */
    static decode(data) {
        try {
            let code = 0;
            let message = '';
            for (const [number, wt, value] of wire.fields(data)) {
                if (number === 1 && wt === wire.VARINT) {
                    code = value;
                } else if (number === 2 && wt === wire.LEN) {
                    message = decoder.decode(value);
                }
            }
            if (code === 0) return Decision.allow(readHeaders(data, 3));
            return code <= 0xffffffff ? Decision.deny(Number(code), message) : null;
        } catch (e) {
            if (malformed(e)) return null;
            throw e;
        }
    }
}

function writeHeaders(w, number, headers) {
    for (const [name, value] of headers) {
        w.message(number, new wire.Writer().string(1, name).string(2, value));
    }
}

/** The `Header { string name = 1; string value = 2; }` entries in field `number`, names
 * lower-cased; entries without a name skipped. Throws when malformed (see `malformed`). */
function readHeaders(data, number) {
    const out = [];
    for (const [n, wt, value] of wire.fields(data)) {
        if (n !== number || wt !== wire.LEN) continue;
        let name = '';
        let text = '';
        for (const [hn, hwt, hv] of wire.fields(value)) {
            if (hwt === wire.LEN && hn === 1) {
                name = decoder.decode(hv).toLowerCase();
            } else if (hwt === wire.LEN && hn === 2) {
                text = decoder.decode(hv);
            }
        }
        if (name) out.push([name, text]);
    }
    return out;
}

/** `CheckRequest { string method = 1; string principal = 2; repeated Header headers = 3 }`. */
export function checkRequest(method, principal, headers) {
    const w = new wire.Writer().string(1, method);
    if (principal) w.string(2, principal);
    writeHeaders(w, 3, headers);
    return w.finish();
}

/** The headers of a `CheckResponse { repeated Header headers = 1; }`. */
export function checkResponse(data) {
    return readHeaders(data, 1);
}

/** `authz:` and the hex SHA-256 of the method, principal and forwarded headers, each part
 * length-prefixed (as the Rust example computes it). */
export function cacheKey(method, principal, headers) {
    const h = sha256.create();
    const len = new Uint8Array(8);
    const view = new DataView(len.buffer);
    const part = (b) => {
        view.setBigUint64(0, BigInt(b.length), true);
        h.update(len);
        h.update(b);
    };
    part(encoder.encode(method));
    if (principal !== undefined && principal !== null) {
        part(encoder.encode('p'));
        part(encoder.encode(principal));
    } else {
        part(encoder.encode('-'));
    }
    for (const [name, value] of headers) {
        part(encoder.encode(name));
        part(encoder.encode(value));
    }
    return `authz:${bytesToHex(h.digest())}`;
}
