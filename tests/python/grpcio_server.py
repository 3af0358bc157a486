"""A stock Python grpcio server (gRPC's C core) serving the synapsor test echo service, so tests
can put a second gRPC stack *behind* the gateway, with its default policies (PING enforcement,
stream limits) or the ones a test sets. Messages are decoded and encoded by hand; no generated
code is needed.

Usage: grpcio_server.py NAME [OPTIONS_JSON]
  OPTIONS_JSON: grpc server options, e.g. '{"grpc.max_concurrent_streams": 2}'.
Prints "port N" on stdout once serving on 127.0.0.1:N, then serves until stdin closes.
Unary sleeps delay_ms (field 4) and echoes; ServerStream sends reply_count (field 2) replies,
the first at once and the others delay_ms apart.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

from echo_wire import decode, varint


def parse_request(data):
    """EchoRequest fields by number: 1 payload, 2 reply_count, 4 delay_ms."""
    return decode(data)


def reply(name, payload=b"", seq=0):
    out = b""
    if payload:
        out += varint(1 << 3 | 2) + varint(len(payload)) + payload
    encoded = name.encode()
    out += varint(2 << 3 | 2) + varint(len(encoded)) + encoded
    if seq:
        out += varint(3 << 3) + varint(seq)
    return out


def main():
    name = sys.argv[1]
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    lock = threading.Lock()

    def say(line):
        with lock:
            print(line, flush=True)

    def unary(request, context):
        f = parse_request(request)
        delay = f.get(4, 0)
        if delay:
            time.sleep(delay / 1000.0)
        return reply(name, f.get(1, b""))

    def server_stream(request, context):
        f = parse_request(request)
        count = f.get(2, 1)
        delay = f.get(4, 0)
        for seq in range(count):
            if delay and seq:
                # The first reply goes at once; the stream is quiet between the others.
                time.sleep(delay / 1000.0)
            yield reply(name, f.get(1, b""), seq)

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=list(options.items()),
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("synapsor.test.v1.Echo", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    say("port %d" % port)
    sys.stdin.read()  # the test closes stdin (or dies) to stop us
    server.stop(0)


if __name__ == "__main__":
    main()
