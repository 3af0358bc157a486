"""Protobuf wire-format helpers shared by the grpcio test client and server: varints and
length-delimited fields, enough to encode and decode the echo service's messages by hand."""


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def decode(data):
    """Fields by number: bytes for length-delimited ones, ints for varints."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        num, kind = key >> 3, key & 7
        if kind == 0:
            value, i = read_varint(data, i)
        elif kind == 2:
            n, i = read_varint(data, i)
            value, i = data[i:i + n], i + n
        else:
            raise ValueError("unexpected wire type %d" % kind)
        fields[num] = value
    return fields
