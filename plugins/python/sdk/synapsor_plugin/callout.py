"""Unary gRPC calls to the gateway's upstream groups (contract 0.2.1 ``callout``), through
its balancer, pools, TLS and health state: Envoy's ``ext_authz``, proxy-wasm's
``dispatch_grpc_call``. The groups a plugin may call are listed in its YAML
(``callouts.groups``). Failures raise :class:`CalloutError`."""

from typing import Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import callout as wit
from wit_world.imports import types

from .actions import Reject
from .code import Code


class Answer:
    """An OK answer: ``message`` (bytes), ``headers`` and ``trailers`` (``(name, value)``)."""

    def __init__(self, r: wit.Response):
        self.message = r.message
        self.headers: List[Tuple[str, str]] = [(h.name, h.value) for h in r.headers]
        self.trailers: List[Tuple[str, str]] = [(h.name, h.value) for h in r.trailers]


class CalloutError(Exception):
    """Why a callout failed. ``kind`` is ``not-allowed``, ``limited``, ``timeout``,
    ``unavailable``, ``status`` (the service answered ``code`` other than OK, with ``message``
    and ``trailers``) or ``invalid``; ``detail`` says more (for the log: it may name
    addresses)."""

    def __init__(self, kind: str, detail: str = "", code: int = 0,
                 trailers: Optional[List[Tuple[str, str]]] = None):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.code = code
        self.message = detail
        self.trailers = trailers or []

    def to_reject(self) -> Reject:
        """The service's status as this plugin's refusal (a status error; any other kind is
        UNAVAILABLE naming the kind)."""
        if self.kind == "status" and 1 <= self.code <= 16:
            return Reject(self.code, self.message)
        return Reject(Code.UNAVAILABLE, f"callout failed ({self.kind})")


_KINDS = ((wit.Error_NotAllowed, "not-allowed"), (wit.Error_Limited, "limited"),
          (wit.Error_Unavailable, "unavailable"), (wit.Error_Invalid, "invalid"))


def _error(v) -> CalloutError:
    if isinstance(v, wit.Error_Status):
        st = v.value
        return CalloutError("status", st.message, st.code,
                            [(h.name, h.value) for h in st.trailers])
    if isinstance(v, wit.Error_Timeout):
        return CalloutError("timeout")
    for cls, kind in _KINDS:
        if isinstance(v, cls):
            return CalloutError(kind, v.value)
    return CalloutError("invalid", repr(v))


def call(group: str, method: str, message: bytes = b"",
         metadata: Optional[Dict[str, str]] = None,
         timeout_ms: Optional[int] = None) -> Answer:
    """Calls ``method`` (``/pkg.Service/Method``) on the upstream group ``group`` with one
    request ``message`` and waits for the answer, at most ``timeout_ms`` (and never longer
    than ``callouts.timeout`` or the client's deadline). Not available in ``__init__``."""
    md = [types.Header(k, v) for k, v in (metadata or {}).items()]
    try:
        return Answer(wit.call(wit.Request(group, method, md, bytes(message), timeout_ms)))
    except Err as e:
        raise _error(e.value) from None
