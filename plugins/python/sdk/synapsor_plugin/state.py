"""The plugin's key-value store (contract 0.2.1 ``state``): byte values with expiry, shared
by every instance on every worker (and by replicas, with Redis). Keys are at most 256 bytes,
values at most the plugin's ``state.max_value_size``. Failures raise :class:`StateError`."""

from typing import Optional

from componentize_py_types import Err
from wit_world.imports import state as wit


class StateError(Exception):
    """Why a state operation failed: ``kind`` is ``too-large``, ``full`` or ``unavailable``
    (Redis could not be asked and ``state.on_redis_error`` is ``fail``)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def _error(e: Err) -> StateError:
    v = e.value
    if isinstance(v, wit.Error_TooLarge):
        return StateError("too-large", v.value)
    if isinstance(v, wit.Error_Unavailable):
        return StateError("unavailable", v.value)
    return StateError("full")


def get(key: str) -> Optional[bytes]:
    """The value of ``key``, or None when it is absent or expired."""
    try:
        return wit.get(key)
    except Err as e:
        raise _error(e) from None


def set(key: str, value: bytes, ttl_ms: Optional[int] = None) -> None:
    """Sets ``key``, expiring after ``ttl_ms`` milliseconds (None: kept until deleted)."""
    try:
        wit.set(key, bytes(value), ttl_ms)
    except Err as e:
        raise _error(e) from None


def delete(key: str) -> bool:
    """Deletes ``key``; True when it was there."""
    try:
        return wit.delete(key)
    except Err as e:
        raise _error(e) from None


def compare_and_swap(key: str, expected: Optional[bytes], value: Optional[bytes],
                     ttl_ms: Optional[int] = None) -> bool:
    """Atomically sets ``key`` to ``value`` (None deletes it) when its value is ``expected``
    (None: absent); True when it did. Of racing swaps from one value exactly one wins."""
    try:
        return wit.compare_and_swap(key, expected, value, ttl_ms)
    except Err as e:
        raise _error(e) from None
