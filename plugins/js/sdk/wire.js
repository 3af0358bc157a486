/**
 * The protobuf wire format (protobuf.dev "Encoding"), enough to read and write messages
 * without generated code: varints, fixed 32/64-bit and length-delimited fields.
 *
 * ```js
 * const bytes = new wire.Writer().string(1, 'x').varint(2, 5).finish();
 * for (const [number, wireType, value] of wire.fields(bytes)) { ... }
 * ```
 *
 * Integers read back are numbers, or bigints when above `Number.MAX_SAFE_INTEGER` (2^53 - 1;
 * a negative int64 is a 10-byte varint, read back as a bigint: `BigInt.asIntN(64, v)`).
 *
 * @module synapsor-plugin/wire
 */

/** The wire type of int32/int64/uint32/uint64/sint/bool/enum fields. */
export const VARINT = 0;
/** The wire type of fixed64/sfixed64/double fields. */
export const I64 = 1;
/** The wire type of length-delimited fields: string, bytes, embedded messages, packed. */
export const LEN = 2;
/** The wire type of fixed32/sfixed32/float fields. */
export const I32 = 5;

/** The bytes are not a well-formed protobuf message. */
export class WireError extends Error {
    /** @param {string} message what is wrong */
    constructor(message) {
        super(message);
        this.name = 'WireError';
    }
}

const encoder = new TextEncoder();
const MAX_SAFE = 9007199254740991n;
const U64 = (1n << 64n) - 1n;

/**
 * Builds a message field by field; each method returns the writer:
 * `new Writer().string(1, 'x').varint(2, 5).finish()`.
 */
export class Writer {
    constructor() {
        /** @private */
        this._buf = new Uint8Array(64);
        /** @private */
        this._len = 0;
    }

    /** @private */
    _reserve(n) {
        if (this._len + n <= this._buf.length) return;
        let size = this._buf.length * 2;
        while (size < this._len + n) size *= 2;
        const buf = new Uint8Array(size);
        buf.set(this._buf.subarray(0, this._len));
        this._buf = buf;
    }

    /** @private */
    _rawVarint(value) {
        this._reserve(10);
        const buf = this._buf;
        if (typeof value === 'number' && value >= 0 && value <= 0x7fffffff && Number.isInteger(value)) {
            let v = value;
            while (v >= 0x80) {
                buf[this._len++] = (v & 0x7f) | 0x80;
                v >>>= 7;
            }
            buf[this._len++] = v;
            return;
        }
        // BigInt(1.5) throws a RangeError; negative numbers become two's complement.
        let v = BigInt(value) & U64;
        while (v >= 0x80n) {
            buf[this._len++] = Number(v & 0x7fn) | 0x80;
            v >>= 7n;
        }
        buf[this._len++] = Number(v);
    }

    /** @private */
    _key(number, wireType) {
        if (!Number.isInteger(number) || number < 1 || number > 0x1fffffff) {
            throw new RangeError(`field number must be 1 to 2^29-1, not ${String(number)}`);
        }
        this._rawVarint(number * 8 + wireType);
    }

    /**
     * An int32/int64/uint32/uint64/bool/enum field (negative numbers as 64-bit two's
     * complement, as protobuf writes int32 and int64).
     *
     * @param {number} number the field number (1 to 2^29-1)
     * @param {number | bigint | boolean} value an integer
     * @returns {this}
     * @throws {RangeError} when `value` is not an integer
     */
    varint(number, value) {
        this._key(number, VARINT);
        this._rawVarint(typeof value === 'boolean' ? Number(value) : value);
        return this;
    }

    /**
     * A `bytes` (or embedded message) field.
     *
     * @param {number} number the field number
     * @param {Uint8Array} value the bytes
     * @returns {this}
     */
    bytes(number, value) {
        const b = value instanceof Uint8Array ? value : new Uint8Array(value);
        this._key(number, LEN);
        this._rawVarint(b.length);
        this._reserve(b.length);
        this._buf.set(b, this._len);
        this._len += b.length;
        return this;
    }

    /**
     * A `string` field (UTF-8).
     *
     * @param {number} number the field number
     * @param {string} value the text
     * @returns {this}
     */
    string(number, value) {
        return this.bytes(number, encoder.encode(value));
    }

    /**
     * An embedded message field.
     *
     * @param {number} number the field number
     * @param {Writer} inner the embedded message, written
     * @returns {this}
     */
    message(number, inner) {
        return this.bytes(number, inner.finish());
    }

    /**
     * The message's bytes (a copy: the writer can go on).
     *
     * @returns {Uint8Array}
     */
    finish() {
        return this._buf.slice(0, this._len);
    }
}

/** A varint at `data[i]`: [value, next index]. */
function readVarint(data, i) {
    let v = 0;
    let mul = 1;
    // Up to 7 bytes (49 bits) add up exactly in a number.
    for (let n = 0; n < 7; n++) {
        if (i >= data.length) throw new WireError('truncated or overlong varint');
        const b = data[i++];
        v += (b & 0x7f) * mul;
        if (b < 0x80) return [v, i];
        mul *= 128;
    }
    let big = BigInt(v);
    for (let shift = 49n; ; shift += 7n) {
        if (i >= data.length || shift > 63n) throw new WireError('truncated or overlong varint');
        const b = data[i++];
        big |= BigInt(b & 0x7f) << shift;
        if (b < 0x80) return [big <= MAX_SAFE ? Number(big) : big, i];
    }
}

/**
 * Each field of `data` in order as `[number, wireType, value]`: for VARINT, I64 and I32 an
 * unsigned integer (little-endian for the fixed ones; a number, or a bigint past 2^53 - 1),
 * for LEN a `Uint8Array` (a view into `data`, not a copy).
 *
 * @param {Uint8Array} data a serialized message
 * @returns {Generator<[number, number, number | bigint | Uint8Array]>}
 * @throws {WireError} (while iterating) when `data` is malformed
 */
export function* fields(data) {
    let i = 0;
    while (i < data.length) {
        let key;
        [key, i] = readVarint(data, i);
        const wt = typeof key === 'bigint' ? Number(key & 7n) : key % 8;
        const number = typeof key === 'bigint' ? Number(key >> 3n) : Math.floor(key / 8);
        if (number === 0) throw new WireError('field number 0');
        let value;
        if (wt === VARINT) {
            [value, i] = readVarint(data, i);
        } else if (wt === I64 || wt === I32) {
            const size = wt === I64 ? 8 : 4;
            if (i + size > data.length) throw new WireError('truncated fixed field');
            const lo = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) >>> 0;
            if (wt === I32) {
                value = lo;
            } else {
                const hi = (data[i + 4] | (data[i + 5] << 8) | (data[i + 6] << 16) | (data[i + 7] << 24)) >>> 0;
                value = hi < 0x200000 ? hi * 0x100000000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
            }
            i += size;
        } else if (wt === LEN) {
            let size;
            [size, i] = readVarint(data, i);
            if (typeof size === 'bigint' || i + size > data.length) {
                throw new WireError('truncated length-delimited field');
            }
            value = data.subarray(i, i + size);
            i += size;
        } else {
            throw new WireError(`unsupported wire type ${wt}`);
        }
        yield [number, wt, value];
    }
}
