"""What hooks answer: header changes, refusals, message replacements and status overrides.

A hook returns ``None`` (go on unchanged), a list of header changes (``set_header``,
``append_header``, ``remove_header``), or raises or returns a :class:`Reject`. The adapter in
``synapsor_plugin.export`` turns these into the contract's variants (``wit/plugin.wit``).
"""

from typing import Dict, Iterable, List, Optional, Tuple, Union

from wit_world.imports import types

from .code import Code

HeaderOp = types.HeaderOp


def set_header(name: str, value: str) -> HeaderOp:
    """Replace every value of ``name`` (lower-case) with ``value``; add it when absent."""
    return types.HeaderOp_Set(types.Header(name, value))


def append_header(name: str, value: str) -> HeaderOp:
    """Add one more value for ``name``, keeping the existing ones."""
    return types.HeaderOp_Append(types.Header(name, value))


def remove_header(name: str) -> HeaderOp:
    """Remove every value of ``name``."""
    return types.HeaderOp_Remove(name)


class Reject(Exception):
    """Ends the call with a gRPC status (1 to 16) and message; never reaches an upstream.

    Raise it or return it from ``on_request`` or a message hook. ``trailers`` are extra
    trailers sent with the status (lower-case names; not ``grpc-status``/``grpc-message``).
    """

    def __init__(self, code: Union[Code, int], message: str = "",
                 trailers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.trailers = dict(trailers or {})

    def to_wit(self) -> types.Reject:
        """The contract's ``reject`` record."""
        trailers = [types.Header(k, v) for k, v in self.trailers.items()]
        return types.Reject(self.code, self.message, trailers)


class Replace:
    """A message hook's answer: replace the message with ``data`` (one whole message)."""

    def __init__(self, data: bytes):
        self.data = bytes(data)


class OverrideStatus:
    """An ``on_response`` answer: replace the status (0 to 16) and message the client gets."""

    def __init__(self, code: Union[Code, int], message: str = ""):
        self.code = int(code)
        self.message = message


Headers = List[Tuple[str, str]]


_OPS = (types.HeaderOp_Set, types.HeaderOp_Append, types.HeaderOp_Remove)


def header_ops(answer: Optional[Iterable[HeaderOp]], hook: str) -> List[HeaderOp]:
    """A hook's list of header changes (``None`` is no change); ``TypeError`` naming what the
    hook answered instead."""
    if answer is None:
        return []
    if not isinstance(answer, (list, tuple)):
        raise TypeError(f"{hook} answered {type(answer).__name__}; expected None, a list of "
                        "header changes (set_header, append_header, remove_header) or "
                        + ("a Reject" if hook == "on_request" else "an OverrideStatus"))
    for op in answer:
        if not isinstance(op, _OPS):
            raise TypeError(f"{hook} answered a list holding {type(op).__name__}; expected "
                            "set_header, append_header or remove_header changes")
        h = op.value if isinstance(op, types.HeaderOp_Remove) else op.value.value
        if not isinstance(h, str):
            raise TypeError(f"{hook}: a header value must be a str, not {type(h).__name__}")
    return list(answer)
