"""misbehave (Python, tests only): does what the request's `x-misbehave` entry asks, so the
gateway's containment can be tested against an interpreted plugin as against the Rust one:
`loop` spins forever, `alloc` allocates without bound, `throw` raises, `recurse` recurses
without bound; anything else goes on unchanged. Its request-message hook reads field 1 of
each message (the testkit's `EchoRequest.payload`): `replace-me` is replaced by a message whose
field 1 is `replaced`, `reject-me` refused with OUT_OF_RANGE, `throw` raises."""

from synapsor_plugin import Code, Plugin, Reject, Replace, export, wire


def _recurse(n):
    return _recurse(n + 1) + 1


class Misbehave(Plugin):
    def on_request(self, req):
        mode = req.header("x-misbehave")
        if mode == "loop":
            while True:
                pass
        if mode == "alloc":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if mode == "throw":
            raise RuntimeError("asked to throw")
        if mode == "recurse":
            _recurse(0)
        return None

    def on_request_message(self, msg):
        payload = next((v for n, wt, v in wire.fields(msg.data) if n == 1 and wt == wire.LEN), b"")
        if payload == b"replace-me":
            return Replace(wire.Writer().bytes(1, b"replaced").getvalue())
        if payload == b"reject-me":
            raise Reject(Code.OUT_OF_RANGE, f"message {msg.index} refused")
        if payload == b"throw":
            raise RuntimeError("asked to throw in a message hook")
        return None


WitWorld = export(Misbehave)
