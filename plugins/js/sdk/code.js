/**
 * gRPC status codes (the gRPC spec's `doc/statuscode.md`), named as in `grpc.StatusCode`.
 *
 * @module synapsor-plugin/code
 */

/**
 * A gRPC status code: 0 (`OK`) to 16 (`UNAUTHENTICATED`). A frozen object of numbers, so
 * `Code.NOT_FOUND === 5`.
 *
 * @readonly
 * @enum {number}
 */
export const Code = Object.freeze({
    OK: 0,
    CANCELLED: 1,
    UNKNOWN: 2,
    INVALID_ARGUMENT: 3,
    DEADLINE_EXCEEDED: 4,
    NOT_FOUND: 5,
    ALREADY_EXISTS: 6,
    PERMISSION_DENIED: 7,
    RESOURCE_EXHAUSTED: 8,
    FAILED_PRECONDITION: 9,
    ABORTED: 10,
    OUT_OF_RANGE: 11,
    UNIMPLEMENTED: 12,
    INTERNAL: 13,
    UNAVAILABLE: 14,
    DATA_LOSS: 15,
    UNAUTHENTICATED: 16,
});
