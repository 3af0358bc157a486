"""misbehave (Python, tests only): does what the request's `x-misbehave` entry asks, so the
gateway's containment can be tested against an interpreted plugin as against the Rust one:
`loop` spins forever, `alloc` allocates without bound, `throw` raises, `recurse` recurses
without bound; anything else goes on unchanged."""

from synapsor_plugin import Plugin, export


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


WitWorld = export(Misbehave)
