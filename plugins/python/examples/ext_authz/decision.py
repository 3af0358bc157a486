"""The messages ext-authz exchanges and keeps, in the protobuf wire format: the
`CheckRequest` it sends, the `CheckResponse` it reads, a call's cache key and a decision's
cached form (the same encodings as the Rust example's `decision.rs`)."""

import hashlib

from synapsor_plugin import Code, Reject, append_header, set_header, wire


class Decision:
    """Allow with headers to set, or deny with a status (1 to 16) and message."""

    def __init__(self, headers=None, code=0, message=""):
        self.headers = headers or []
        self.code = code
        self.message = message

    @classmethod
    def allow(cls, headers):
        return cls(headers=headers)

    @classmethod
    def deny(cls, code, message):
        return cls(code=code, message=message)

    def result(self):
        """`allow` or `deny`, the metric label."""
        return "deny" if self.code else "allow"

    def action(self):
        """The first header of a name replaces the client's values (a client cannot forge
        `x-authz-user`); later ones of that name are added."""
        if self.code:
            code = self.code if 1 <= self.code <= 16 else Code.UNKNOWN
            return Reject(code, self.message)
        ops, seen = [], set()
        for name, value in self.headers:
            ops.append(append_header(name, value) if name in seen else set_header(name, value))
            seen.add(name)
        return ops

    def encode(self):
        """`{ uint32 code = 1 (0: allow); string message = 2; repeated Header headers = 3 }`."""
        w = wire.Writer()
        if self.code:
            w.varint(1, self.code).string(2, self.message)
        else:
            write_headers(w, 3, self.headers)
        return w.getvalue()

    @classmethod
    def decode(cls, data):
        """The cached form read back; None when it is not that."""
        try:
            code, message = 0, ""
            for number, wt, value in wire.fields(data):
                if number == 1 and wt == wire.VARINT:
                    code = value
                elif number == 2 and wt == wire.LEN:
                    message = value.decode()
            if code == 0:
                return cls.allow(read_headers(data, 3))
            return cls.deny(code, message) if code <= 0xFFFFFFFF else None
        except ValueError:
            return None


def write_headers(w, number, headers):
    for name, value in headers:
        w.message(number, wire.Writer().string(1, name).string(2, value))


def read_headers(data, number):
    """The `Header { string name = 1; string value = 2; }` entries in field `number`, names
    lower-cased; entries without a name skipped. Raises ValueError when malformed."""
    out = []
    for n, wt, value in wire.fields(data):
        if n != number or wt != wire.LEN:
            continue
        name = text = ""
        for hn, hwt, hv in wire.fields(value):
            if hwt == wire.LEN and hn == 1:
                name = hv.decode().lower()
            elif hwt == wire.LEN and hn == 2:
                text = hv.decode()
        if name:
            out.append((name, text))
    return out


def check_request(method, principal, headers):
    """`CheckRequest { string method = 1; string principal = 2; repeated Header headers = 3 }`."""
    w = wire.Writer().string(1, method)
    if principal:
        w.string(2, principal)
    write_headers(w, 3, headers)
    return w.getvalue()


def check_response(data):
    """The headers of a `CheckResponse { repeated Header headers = 1; }`."""
    return read_headers(data, 1)


def cache_key(method, principal, headers):
    """`authz:` and the hex SHA-256 of the method, principal and forwarded headers, each part
    length-prefixed (as the Rust example computes it)."""
    h = hashlib.sha256()

    def part(b):
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    part(method.encode())
    if principal is not None:
        part(b"p")
        part(principal.encode())
    else:
        part(b"-")
    for name, value in headers:
        part(name.encode())
        part(value.encode())
    return "authz:" + h.hexdigest()
