"""What hooks see of a call: thin views over the contract's records with header look-ups."""

from typing import List, Optional, Tuple

from wit_world.imports import types


def _first(headers: List[types.Header], name: str) -> Optional[str]:
    for h in headers:
        if h.name == name:
            return h.value
    return None


def _all(headers: List[types.Header], name: str) -> List[str]:
    return [h.value for h in headers if h.name == name]


class Request:
    """A call before it is forwarded (the contract's ``request-info``).

    Attributes: ``call_id`` (int, unique in the process), ``method`` (``/pkg.Service/Method``),
    ``authority``, ``metadata`` (list of ``(name, value)``, names lower-case, in arrival
    order), ``peer`` (``ip:port``), ``principal`` (str or None: who an auth stage or the client
    certificate says the caller is), ``deadline_ms`` (int or None: time left of
    ``grpc-timeout``).
    """

    __slots__ = ("call_id", "method", "authority", "metadata", "peer", "principal",
                 "deadline_ms", "_raw")

    def __init__(self, info: types.RequestInfo):
        self._raw = info.metadata
        self.call_id = info.call_id
        self.method = info.method
        self.authority = info.authority
        self.metadata: List[Tuple[str, str]] = [(h.name, h.value) for h in info.metadata]
        self.peer = info.peer
        self.principal = info.principal
        self.deadline_ms = info.deadline_ms

    def header(self, name: str) -> Optional[str]:
        """The first value of the metadata entry ``name`` (lower-case), or None."""
        return _first(self._raw, name)

    def headers(self, name: str) -> List[str]:
        """Every value of the metadata entry ``name`` (lower-case), in order."""
        return _all(self._raw, name)


class Response:
    """A call whose status is known (the contract's ``response-info``).

    Attributes: ``call_id``, ``method``, ``status`` (int, 0 = OK), ``message``
    (``grpc-message``), ``headers`` and ``trailers`` (lists of ``(name, value)``).
    """

    __slots__ = ("call_id", "method", "status", "message", "headers", "trailers", "_raw")

    def __init__(self, info: types.ResponseInfo):
        self._raw = info
        self.call_id = info.call_id
        self.method = info.method
        self.status = info.status
        self.message = info.message
        self.headers = [(h.name, h.value) for h in info.headers]
        self.trailers = [(h.name, h.value) for h in info.trailers]

    def header(self, name: str) -> Optional[str]:
        """The first value of the response header ``name``, or None."""
        return _first(self._raw.headers, name)

    def trailer(self, name: str) -> Optional[str]:
        """The first value of the trailer ``name``, or None."""
        return _first(self._raw.trailers, name)


Message = types.Message
"""One gRPC message: ``call_id``, ``method``, ``index`` (0 for the first in its direction),
``compressed`` (bool) and ``data`` (bytes, always decompressed)."""
