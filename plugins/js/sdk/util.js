/**
 * Conversions shared by the SDK's modules (not part of its API).
 *
 * @module synapsor-plugin/util
 * @private
 */

/**
 * `value` as a header name or value: a string as it is; a number, bigint or boolean as its
 * text; anything else throws a `TypeError` naming `what`.
 *
 * @param {unknown} value
 * @param {string} what
 * @returns {string}
 */
export function text(value, what) {
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
        return String(value);
    }
    throw new TypeError(`${what} must be a string, not ${jsType(value)}`);
}

/**
 * Headers given as an object (`{ name: value }`), a `Map` or an iterable of `[name, value]`
 * pairs (`null`/`undefined`: none), as the contract's `header` records.
 *
 * @param {Record<string, string> | Iterable<[string, string]> | null | undefined} headers
 * @param {string} what
 * @returns {{ name: string, value: string }[]}
 */
export function headerRecords(headers, what) {
    if (headers == null) return [];
    const entries = typeof headers[Symbol.iterator] === 'function'
        ? Array.from(headers) : Object.entries(headers);
    return entries.map((e) => {
        if (!Array.isArray(e) || e.length !== 2) {
            throw new TypeError(`${what} must be an object or [name, value] pairs`);
        }
        return { name: text(e[0], `a ${what} name`), value: text(e[1], `a ${what} value`) };
    });
}

/**
 * The contract's `header` records as `[name, value]` pairs.
 *
 * @param {{ name: string, value: string }[]} records
 * @returns {[string, string][]}
 */
export function pairs(records) {
    const out = new Array(records.length);
    for (let i = 0; i < records.length; i++) out[i] = [records[i].name, records[i].value];
    return out;
}

/**
 * `data` as a `Uint8Array` (the same one when it is one): a typed array or `DataView` (its
 * bytes), an `ArrayBuffer`, or an array of numbers 0 to 255. Anything else throws a
 * `TypeError` naming `what`.
 *
 * @param {Uint8Array | ArrayBufferView | ArrayBuffer | number[]} data
 * @param {string} what
 * @returns {Uint8Array}
 */
export function bytes(data, what) {
    if (data instanceof Uint8Array) return data;
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (Array.isArray(data)) return Uint8Array.from(data);
    throw new TypeError(`${what} must be bytes (a Uint8Array), not ${jsType(data)}`);
}

/** The largest 64-bit integer componentize-js 0.23 passes to the gateway intact: 2^63 - 1. */
export const MAX_I64 = (1n << 63n) - 1n;

/**
 * `value` (milliseconds) as the contract's `option<u64>`: `undefined` for none; a
 * non-negative integer (number or bigint) as a bigint, at most 2^63 - 1 (componentize-js 0.23
 * cannot pass more; the gateway takes any time to live past 365 days as that anyway).
 * Anything else throws a `RangeError`.
 *
 * @param {number | bigint | null | undefined} value
 * @param {string} what
 * @returns {bigint | undefined}
 */
export function optionalU64(value, what) {
    if (value == null) return undefined;
    if ((typeof value === 'number' && Number.isInteger(value) && value >= 0)
        || (typeof value === 'bigint' && value >= 0n)) {
        const v = BigInt(value);
        return v > MAX_I64 ? MAX_I64 : v;
    }
    throw new RangeError(`${what} must be a non-negative integer, not ${String(value)}`);
}

/**
 * A u64 from the contract as a number when it is at most `Number.MAX_SAFE_INTEGER`, else
 * as the bigint.
 *
 * @param {bigint} value
 * @returns {number | bigint}
 */
export function u64(value) {
    return value <= 9007199254740991n ? Number(value) : value;
}

/**
 * The name Python gives a JSON value's type (`list`, `str`, `int`, `float`, `bool`,
 * `NoneType`, `dict`), or the JavaScript one for other values; for messages identical to the
 * Python SDK's.
 *
 * @param {unknown} value
 * @returns {string}
 */
export function describeType(value) {
    if (value === null) return 'NoneType';
    if (Array.isArray(value)) return 'list';
    switch (typeof value) {
        case 'string': return 'str';
        case 'number': return Number.isInteger(value) ? 'int' : 'float';
        case 'boolean': return 'bool';
        case 'object': return value.constructor && value.constructor !== Object
            ? value.constructor.name : 'dict';
        default: return typeof value;
    }
}

/** The most stack frames {@link formatError} shows. */
const STACK_FRAMES = 12;

/**
 * What `value` is, for error messages: `null`, `undefined`, `a string`, `a number`, `an
 * array`, `an object`, or its class (`a Map`).
 *
 * @param {unknown} value
 * @returns {string}
 */
export function jsType(value) {
    if (value === null || value === undefined) return String(value);
    if (Array.isArray(value)) return 'an array';
    if (typeof value === 'object') {
        const name = value.constructor && value.constructor !== Object ? value.constructor.name : 'object';
        return /^[aeiou]/i.test(name) ? `an ${name}` : `a ${name}`;
    }
    return /^[aeiou]/i.test(typeof value) ? `an ${typeof value}` : `a ${typeof value}`;
}

/**
 * An error as one text: its name and message, then the innermost frames of its stack (at
 * most 12) when it has one.
 *
 * @param {unknown} error
 * @returns {string}
 */
export function formatError(error) {
    if (error instanceof Error) {
        const head = `${error.name}: ${error.message}`;
        // The innermost frames, without those of the generated bindings.
        const frames = (typeof error.stack === 'string' ? error.stack.split('\n') : [])
            .filter((line) => line && !line.includes('/sources/initializer.js:'));
        if (frames.length > STACK_FRAMES) {
            const more = frames.length - STACK_FRAMES;
            frames.length = STACK_FRAMES;
            frames.push(`(${more} more frames)`);
        }
        return frames.length ? `${head}\n${frames.join('\n')}` : head;
    }
    try {
        return String(error);
    } catch {
        return Object.prototype.toString.call(error);
    }
}
