"""The protobuf wire format (protobuf.dev "Encoding"), enough to read and write messages
without generated code: varints, fixed 32/64-bit and length-delimited fields."""

from typing import Iterator, Tuple, Union

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


class Writer:
    """Builds a message field by field: ``Writer().string(1, "x").varint(2, 5).getvalue()``."""

    def __init__(self):
        self._out = bytearray()

    def _key(self, number: int, wire_type: int) -> None:
        self._raw_varint((number << 3) | wire_type)

    def _raw_varint(self, v: int) -> None:
        v &= (1 << 64) - 1
        while v >= 0x80:
            self._out.append((v & 0x7F) | 0x80)
            v >>= 7
        self._out.append(v)

    def varint(self, number: int, value: int) -> "Writer":
        """An int32/int64/uint32/uint64/bool/enum field (negative numbers as two's complement)."""
        self._key(number, VARINT)
        self._raw_varint(value)
        return self

    def bytes(self, number: int, value: Union[bytes, bytearray]) -> "Writer":
        """A ``bytes`` (or embedded message) field."""
        self._key(number, LEN)
        self._raw_varint(len(value))
        self._out += value
        return self

    def string(self, number: int, value: str) -> "Writer":
        """A ``string`` field (UTF-8)."""
        return self.bytes(number, value.encode())

    def message(self, number: int, inner: "Writer") -> "Writer":
        """An embedded message field."""
        return self.bytes(number, inner.getvalue())

    def getvalue(self) -> bytes:
        """The message's bytes."""
        return bytes(self._out)


def _varint(data: bytes, i: int) -> Tuple[int, int]:
    v, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, i
        shift += 7


def fields(data: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """Each field of ``data`` in order as ``(number, wire_type, value)``: an int for VARINT,
    I64 and I32 (little-endian, unsigned), bytes for LEN. Raises :class:`WireError`."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wt == VARINT:
            value, i = _varint(data, i)
        elif wt in (I64, I32):
            size = 8 if wt == I64 else 4
            if i + size > len(data):
                raise WireError("truncated fixed field")
            value = int.from_bytes(data[i:i + size], "little")
            i += size
        elif wt == LEN:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise WireError("truncated length-delimited field")
            value = bytes(data[i:i + size])
            i += size
        else:
            raise WireError(f"unsupported wire type {wt}")
        yield number, wt, value
