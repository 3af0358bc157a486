"""A Python grpcio client (gRPC's C core: a second HTTP/2 and gRPC stack) talking to the
synapsor test echo service through the gateway. Messages are encoded by hand, so no generated
code is needed. Usage: grpcio_client.py HOST:PORT. Exits non-zero on the first mismatch."""

import sys

import grpc

from echo_wire import decode, varint


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_int(num, value):
    return varint(num << 3) + varint(value)


def echo_request(payload=b"", reply_count=0, reply_size=0, delay_ms=0, fail_code=0, fail_message=""):
    out = b""
    if payload:
        out += field_bytes(1, payload)
    if reply_count:
        out += field_int(2, reply_count)
    if reply_size:
        out += field_int(3, reply_size)
    if delay_ms:
        out += field_int(4, delay_ms)
    if fail_code:
        out += field_int(5, fail_code)
    if fail_message:
        out += field_bytes(6, fail_message.encode())
    return out


def check(cond, what):
    if not cond:
        print("FAIL: " + what)
        sys.exit(1)
    print("ok: " + what)


def main():
    target = sys.argv[1]
    ident = lambda b: b
    limits = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(target, options=limits) as ch:
        unary = ch.unary_unary("/synapsor.test.v1.Echo/Unary", request_serializer=ident, response_deserializer=ident)
        reply, call = unary.with_call(
            echo_request(payload=b"from python"),
            metadata=[("x-lang", "python"), ("x-blob-bin", b"\x00\x01\xff")],
            timeout=10,
        )
        r = decode(reply)
        check(r.get(1) == b"from python", "unary payload echoed")
        check(r.get(2) == b"py", "answered by the backend behind the gateway")
        md = dict(call.initial_metadata())
        check(md.get("x-lang") == "python", "ASCII metadata echoed in response headers")
        check(md.get("x-blob-bin") == b"\x00\x01\xff", "-bin metadata echoed intact")

        try:
            unary(echo_request(fail_code=5, fail_message="no such thing"), timeout=10)
            check(False, "error status")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, "upstream status passes through")
            check(e.details() == "no such thing", "upstream message passes through")

        try:
            unary(echo_request(delay_ms=3000), timeout=0.3)
            check(False, "deadline")
        except grpc.RpcError as e:
            # The gateway, the client and the tonic backend (which enforces the forwarded
            # grpc-timeout and answers CANCELLED "Timeout expired") all race at the deadline;
            # whichever status comes first is the right one to pass on.
            tonic_own = e.code() == grpc.StatusCode.CANCELLED and e.details() == "Timeout expired"
            check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or tonic_own, "deadline exceeded")

        stream = ch.unary_stream("/synapsor.test.v1.Echo/ServerStream", request_serializer=ident, response_deserializer=ident)
        seqs = [decode(m).get(3, 0) for m in stream(echo_request(reply_count=20, reply_size=3000), timeout=10)]
        check(seqs == list(range(20)), "server stream in order")

        bidi = ch.stream_stream("/synapsor.test.v1.Echo/Bidi", request_serializer=ident, response_deserializer=ident)
        msgs = [echo_request(payload=("m%d" % i).encode()) for i in range(10)]
        got = [decode(m).get(1) for m in bidi(iter(msgs), timeout=10)]
        check(got == [("m%d" % i).encode() for i in range(10)], "bidi echoes every message")

        try:
            # Metadata over the listener's 16 KiB max_header_list_size: a gRPC status naming
            # the limit (it used to be a bare HTTP 431, which grpcio reports as UNKNOWN).
            unary(echo_request(), metadata=[("x-big", "a" * 20 * 1024)], timeout=10)
            check(False, "oversized metadata")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                  and "max_header_list_size" in (e.details() or ""),
                  "oversized metadata gets RESOURCE_EXHAUSTED naming the limit (%s: %s)"
                  % (e.code(), e.details()))
        reply = unary(echo_request(payload=b"after"), timeout=10)
        check(decode(reply).get(1) == b"after", "the channel still serves after that")

        big = b"z" * (4 << 20)
        reply = unary(echo_request(payload=big), timeout=30)
        check(decode(reply).get(1) == big, "4 MiB message round trip")
    print("all passed")


if __name__ == "__main__":
    main()
