//! Reading and writing the protobuf **wire format** without a schema.
//!
//! A gRPC message is, for most services, a serialized protobuf message: a sequence of fields,
//! each a tag (field number and wire type, as a varint) followed by its value. This module reads
//! and writes that encoding as described by the protobuf encoding spec
//! (<https://protobuf.dev/programming-guides/encoding>), with no `.proto` file, no generated
//! code and nothing but `std`:
//!
//! * [`fields`] iterates over a message's fields, each a [`Field`] with its number and
//!   [`Value`]: `Varint(u64)` (wire type 0: `int32`, `int64`, `uint32`, `uint64`, `sint32`,
//!   `sint64`, `bool`, `enum`), `I64(u64)` (wire type 1: `fixed64`, `sfixed64`, `double`),
//!   `Len(&[u8])` (wire type 2: `string`, `bytes`, embedded messages, packed repeated fields)
//!   and `I32(u32)` (wire type 5: `fixed32`, `sfixed32`, `float`).
//! * [`get`] and [`first`] find the values at a [path](AsPath): dotted field numbers such as
//!   `"2.1"` (field 1 of every field-2 sub-message), descending through len-delimited values.
//! * [`rewrite`] replaces len-delimited values at a path and keeps every other byte.
//! * [`Writer`] builds a message, field by field, and copies fields it read through unchanged.
//!
//! Without a schema a len-delimited value is only bytes: a path such as `"2.1"` *says* field 2
//! is a message, and the reader parses it as one. A string or bytes value that happens to be a
//! well-formed message can therefore be descended into; one that is not makes the call an
//! error (see below).
//!
//! # Errors
//!
//! Reading never panics: input that is not a well-formed message gives a [`WireError`]:
//!
//! * [`WireError::Truncated`]: the input ends inside a tag, a varint or a fixed-width value;
//! * [`WireError::LengthOutOfBounds`]: a length-delimited value longer than what is left;
//! * [`WireError::VarintOverflow`]: a varint of more than 10 bytes, or over 64 bits;
//! * [`WireError::BadFieldNumber`]: field number 0 or over 2^29 - 1;
//! * [`WireError::Group`]: wire types 3 and 4 (the deprecated groups), which this reader does
//!   not support;
//! * [`WireError::BadWireType`]: wire types 6 and 7, which do not exist;
//! * [`WireError::TooDeep`]: a path deeper than [`MAX_DEPTH`];
//! * [`WireError::BadPath`]: a path that is not dotted field numbers.
//!
//! Offsets in errors count bytes from the start of the buffer given to the function (also
//! inside sub-messages) and point at the tag of the field at fault.
//!
//! [`get`], [`first`] and [`rewrite`] read the whole of every message they visit (the outer
//! one, and each sub-message on the way down the path), so a malformed field anywhere in them is
//! an error even when it is not on the path; sub-messages off the path are not parsed.
//!
//! # Example
//!
//! ```
//! use synapsor_plugin_sdk::wire::{self, Value, Writer};
//!
//! // message User { string name = 1; Address address = 2; }  message Address { string street = 1; }
//! let mut w = Writer::new();
//! w.string(1, "Ada").message(2, |a| {
//!     a.string(1, "12 Analytical Row");
//! });
//! let user = w.into_bytes();
//!
//! assert_eq!(wire::get(&user, "2.1").unwrap(), vec![Value::Len(b"12 Analytical Row")]);
//! let redacted = wire::rewrite(&user, "2.1", |_| Some(b"***".to_vec())).unwrap().unwrap();
//! assert_eq!(wire::first(&redacted, "2.1").unwrap().unwrap().as_bytes(), Some(&b"***"[..]));
//! assert_eq!(wire::first(&redacted, "1").unwrap().unwrap().as_str(), Some("Ada"));
//! ```

use std::fmt;

mod path;
mod writer;

pub use path::{AsPath, Path};
pub use writer::Writer;

/// The deepest path [`get`], [`first`] and [`rewrite`] follow: 100 field numbers (protobuf's
/// own default recursion limit).
pub const MAX_DEPTH: usize = 100;

/// The largest field number: 2^29 - 1.
pub const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// A wire type: the low 3 bits of a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WireType {
    /// 0: a varint.
    Varint = 0,
    /// 1: 8 bytes, little-endian.
    I64 = 1,
    /// 2: a varint length, then that many bytes.
    Len = 2,
    /// 3: start of a group (deprecated; not read).
    StartGroup = 3,
    /// 4: end of a group (deprecated; not read).
    EndGroup = 4,
    /// 5: 4 bytes, little-endian.
    I32 = 5,
}

/// A field's value, as the wire format carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value<'a> {
    /// Wire type 0: `int32`, `int64`, `uint32`, `uint64`, `bool`, `enum` (as is; negative
    /// `int32`/`int64` values are 10-byte two's complement), `sint32`/`sint64` (ZigZag; see
    /// [`zigzag_decode`]).
    Varint(u64),
    /// Wire type 1: `fixed64`, `sfixed64` (`as i64`), `double` ([`f64::from_bits`]).
    I64(u64),
    /// Wire type 2: `string`, `bytes`, an embedded message, a packed repeated field.
    Len(&'a [u8]),
    /// Wire type 5: `fixed32`, `sfixed32` (`as i32`), `float` ([`f32::from_bits`]).
    I32(u32),
}

impl<'a> Value<'a> {
    /// The wire type this value travels as.
    pub fn wire_type(&self) -> WireType {
        match self {
            Value::Varint(_) => WireType::Varint,
            Value::I64(_) => WireType::I64,
            Value::Len(_) => WireType::Len,
            Value::I32(_) => WireType::I32,
        }
    }

    /// A len-delimited value's bytes.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Len(b) => Some(b),
            _ => None,
        }
    }

    /// A len-delimited value's bytes when they are UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// A varint's value.
    pub fn as_varint(&self) -> Option<u64> {
        match *self {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }

    /// An 8-byte value.
    pub fn as_fixed64(&self) -> Option<u64> {
        match *self {
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// A 4-byte value.
    pub fn as_fixed32(&self) -> Option<u32> {
        match *self {
            Value::I32(v) => Some(v),
            _ => None,
        }
    }
}

/// One field of a message, as [`fields`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field<'a> {
    /// The field number, 1 to [`MAX_FIELD_NUMBER`].
    pub number: u32,
    /// Its value.
    pub value: Value<'a>,
    /// The field's whole encoding as it was read (tag, length and value), for copying it
    /// through unchanged ([`Writer::field`]).
    pub raw: &'a [u8],
}

/// Why bytes are not a well-formed message, or a path is not a path. See the
/// [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The input ends inside the field at `offset`: in its tag, a varint or a fixed-width value.
    Truncated {
        /// Where the field starts.
        offset: usize,
    },
    /// The field at `offset` says its value is `len` bytes long, but only `available` are left.
    LengthOutOfBounds {
        /// Where the field starts.
        offset: usize,
        /// The length it gives.
        len: u64,
        /// The bytes left after the length.
        available: usize,
    },
    /// The field at `offset` has a varint of more than 10 bytes, or one over 64 bits.
    VarintOverflow {
        /// Where the field starts.
        offset: usize,
    },
    /// The field at `offset` has field number 0 or one over [`MAX_FIELD_NUMBER`].
    BadFieldNumber {
        /// Where the field starts.
        offset: usize,
        /// The number its tag gives.
        number: u64,
    },
    /// The field at `offset` is a group (wire type 3 or 4, deprecated): not supported.
    Group {
        /// Where the field starts.
        offset: usize,
        /// Its field number.
        number: u32,
    },
    /// The field at `offset` has wire type 6 or 7, which do not exist.
    BadWireType {
        /// Where the field starts.
        offset: usize,
        /// The wire type.
        wire_type: u8,
    },
    /// A path of more than [`MAX_DEPTH`] field numbers.
    TooDeep {
        /// The path's length.
        depth: usize,
    },
    /// A path that is not dotted field numbers (1 to [`MAX_FIELD_NUMBER`]).
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { offset } => {
                write!(f, "the message ends inside the field at byte {offset}")
            }
            WireError::LengthOutOfBounds {
                offset,
                len,
                available,
            } => write!(
                f,
                "the field at byte {offset} is {len} bytes long but only {available} are left"
            ),
            WireError::VarintOverflow { offset } => {
                write!(f, "the field at byte {offset} has a varint over 64 bits")
            }
            WireError::BadFieldNumber { offset, number } => {
                write!(f, "the field at byte {offset} has field number {number}")
            }
            WireError::Group { offset, number } => write!(
                f,
                "the field at byte {offset} (number {number}) is a group, which is not supported"
            ),
            WireError::BadWireType { offset, wire_type } => {
                write!(f, "the field at byte {offset} has wire type {wire_type}")
            }
            WireError::TooDeep { depth } => {
                write!(
                    f,
                    "a path of {depth} field numbers is deeper than {MAX_DEPTH}"
                )
            }
            WireError::BadPath { path, reason } => write!(f, "bad field path {path:?}: {reason}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Decodes a ZigZag-encoded varint (`sint32`, `sint64`).
pub fn zigzag_decode(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// ZigZag-encodes a signed value for a `sint32`/`sint64` varint.
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Reads a varint at `buf[*pos..]`, moving `pos` past it. Errors carry `start` as their offset
/// (callers put in the right one).
fn read_varint(buf: &[u8], pos: &mut usize, start: usize) -> Result<u64, WireError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError::Truncated { offset: start });
        };
        *pos += 1;
        if i == 9 && b > 1 {
            // The 10th byte holds bit 63 only: more is over 64 bits or over 10 bytes.
            return Err(WireError::VarintOverflow { offset: start });
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    unreachable!("the 10th byte either ends the varint or is an error")
}

/// A field and where it lies in the buffer it was read from.
struct Located<'a> {
    field: Field<'a>,
    /// The offset of its first byte in that buffer.
    start: usize,
    /// The length of its tag.
    tag_len: usize,
}

/// Reads the field at `buf[*pos..]` (`*pos < buf.len()`), moving `pos` past it. `base` is the
/// offset of `buf` in the caller's input.
fn read_field<'a>(buf: &'a [u8], pos: &mut usize, base: usize) -> Result<Located<'a>, WireError> {
    let start = *pos;
    let offset = base + start;
    let err_at = |e: WireError| match e {
        WireError::Truncated { .. } => WireError::Truncated { offset },
        WireError::VarintOverflow { .. } => WireError::VarintOverflow { offset },
        e => e,
    };
    let tag = read_varint(buf, pos, start).map_err(err_at)?;
    let tag_len = *pos - start;
    let number = tag >> 3;
    if number == 0 || number > u64::from(MAX_FIELD_NUMBER) {
        return Err(WireError::BadFieldNumber { offset, number });
    }
    let number = number as u32;
    let value = match (tag & 7) as u8 {
        0 => Value::Varint(read_varint(buf, pos, start).map_err(err_at)?),
        1 => {
            let bytes = buf
                .get(*pos..*pos + 8)
                .ok_or(WireError::Truncated { offset })?;
            *pos += 8;
            Value::I64(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        }
        2 => {
            let len = read_varint(buf, pos, start).map_err(err_at)?;
            let available = buf.len() - *pos;
            if len > available as u64 {
                return Err(WireError::LengthOutOfBounds {
                    offset,
                    len,
                    available,
                });
            }
            let bytes = &buf[*pos..*pos + len as usize];
            *pos += len as usize;
            Value::Len(bytes)
        }
        5 => {
            let bytes = buf
                .get(*pos..*pos + 4)
                .ok_or(WireError::Truncated { offset })?;
            *pos += 4;
            Value::I32(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
        }
        3 | 4 => return Err(WireError::Group { offset, number }),
        wire_type => return Err(WireError::BadWireType { offset, wire_type }),
    };
    Ok(Located {
        field: Field {
            number,
            value,
            raw: &buf[start..*pos],
        },
        start,
        tag_len,
    })
}

/// The fields of a message, in order: see [`fields`].
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn at(buf: &'a [u8], base: usize) -> Fields<'a> {
        Fields {
            buf,
            pos: 0,
            base,
            failed: false,
        }
    }

    fn next_located(&mut self) -> Option<Result<Located<'a>, WireError>> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = read_field(self.buf, &mut self.pos, self.base);
        self.failed = r.is_err();
        Some(r)
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_located().map(|r| r.map(|l| l.field))
    }
}

impl std::iter::FusedIterator for Fields<'_> {}

/// The fields of the message in `bytes`, in the order they come (repeated fields once per
/// value; an empty message has none). After an error the iterator ends.
///
/// ```
/// use synapsor_plugin_sdk::wire::{self, Value};
/// let msg = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i']; // 1: 150, 2: "hi"
/// let f: Vec<_> = wire::fields(&msg).map(|f| f.map(|f| (f.number, f.value))).collect();
/// assert_eq!(f, vec![Ok((1, Value::Varint(150))), Ok((2, Value::Len(b"hi")))]);
/// ```
pub fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields::at(bytes, 0)
}

/// Checks that `bytes` is a well-formed message at its top level (sub-messages are not
/// parsed: without a schema they are only bytes).
pub fn check(bytes: &[u8]) -> Result<(), WireError> {
    fields(bytes).try_for_each(|f| f.map(|_| ()))
}

/// The values of a packed repeated varint field (`repeated int32 x = 1 [packed]`, the proto3
/// default for scalars), from its len-delimited bytes.
pub fn packed_varints(bytes: &[u8]) -> impl Iterator<Item = Result<u64, WireError>> + '_ {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= bytes.len() {
            return None;
        }
        let start = pos;
        let r = read_varint(bytes, &mut pos, start).map_err(|e| match e {
            WireError::Truncated { .. } => WireError::Truncated { offset: start },
            _ => WireError::VarintOverflow { offset: start },
        });
        failed = r.is_err();
        Some(r)
    })
}

/// Every value at `path` in the message `bytes`, in order: for `"2.1"`, field 1 of each field-2
/// value (all of them when field 2 or 1 is repeated). Values of any wire type are returned at
/// the end of the path; on the way down only len-delimited values are followed (a field-2
/// varint has no field 1). Empty when there is none.
///
/// Errors: a malformed message, a len-delimited value on the way down that is not a well-formed
/// message (the path says it is one), or a bad path.
pub fn get<'a, P: AsPath + ?Sized>(bytes: &'a [u8], path: &P) -> Result<Vec<Value<'a>>, WireError> {
    let numbers = path.field_numbers()?;
    let mut out = Vec::new();
    collect(bytes, 0, &numbers, &mut |v| {
        out.push(v);
        true
    })?;
    Ok(out)
}

/// The first value at `path` (see [`get`]). The rest of each message visited is still read, so
/// a malformed message is an error even after the value.
pub fn first<'a, P: AsPath + ?Sized>(
    bytes: &'a [u8],
    path: &P,
) -> Result<Option<Value<'a>>, WireError> {
    let numbers = path.field_numbers()?;
    let mut found = None;
    collect(bytes, 0, &numbers, &mut |v| {
        found.get_or_insert(v);
        true
    })?;
    Ok(found)
}

/// The last value at `path` (see [`get`]): for a singular field sent more than once, the one
/// that counts.
pub fn last<'a, P: AsPath + ?Sized>(
    bytes: &'a [u8],
    path: &P,
) -> Result<Option<Value<'a>>, WireError> {
    let numbers = path.field_numbers()?;
    let mut found = None;
    collect(bytes, 0, &numbers, &mut |v| {
        found = Some(v);
        true
    })?;
    Ok(found)
}

fn collect<'a>(
    buf: &'a [u8],
    base: usize,
    path: &[u32],
    found: &mut dyn FnMut(Value<'a>) -> bool,
) -> Result<(), WireError> {
    let (&here, rest) = path.split_first().expect("paths are not empty");
    let mut it = Fields::at(buf, base);
    while let Some(l) = it.next_located() {
        let l = l?;
        if l.field.number != here {
            continue;
        }
        if rest.is_empty() {
            found(l.field.value);
        } else if let Value::Len(sub) = l.field.value {
            let sub_base = base + l.start + (l.field.raw.len() - sub.len());
            collect(sub, sub_base, rest, found)?;
        }
    }
    Ok(())
}

/// Replaces len-delimited values at `path` in the message `bytes`: `f` sees each one (every
/// value of a repeated field, in order) and answers its new bytes, or `None` to keep it.
/// Everything else is kept byte for byte, in its order (unknown fields included); the lengths
/// of the sub-messages on the path are re-encoded. Values of other wire types at `path` are
/// left alone (`f` does not see them); on the way down only len-delimited values are followed.
///
/// Answers `Ok(None)` when `f` answered `None` for every value (or there is none at `path`),
/// else the new message. Errors: as for [`get`]; on an error nothing is returned.
///
/// ```
/// use synapsor_plugin_sdk::wire::{self, Writer};
/// let mut w = Writer::new();
/// w.string(1, "keep").string(3, "secret").string(3, "also secret").varint(9, 7);
/// let msg = w.into_bytes();
/// let out = wire::rewrite(&msg, "3", |_| Some(b"x".to_vec())).unwrap().unwrap();
/// let mut want = Writer::new();
/// want.string(1, "keep").string(3, "x").string(3, "x").varint(9, 7);
/// assert_eq!(out, want.into_bytes());
/// assert_eq!(wire::rewrite(&msg, "5", |_| Some(vec![])).unwrap(), None);
/// ```
pub fn rewrite<P, F>(bytes: &[u8], path: &P, mut f: F) -> Result<Option<Vec<u8>>, WireError>
where
    P: AsPath + ?Sized,
    F: FnMut(&[u8]) -> Option<Vec<u8>>,
{
    let numbers = path.field_numbers()?;
    rewrite_in(bytes, 0, &numbers, &mut f)
}

fn rewrite_in(
    buf: &[u8],
    base: usize,
    path: &[u32],
    f: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, WireError> {
    let (&here, rest) = path.split_first().expect("paths are not empty");
    // Built only once something changes: `buf[..copied]` is already in `out`.
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut it = Fields::at(buf, base);
    while let Some(l) = it.next_located() {
        let l = l?;
        if l.field.number != here {
            continue;
        }
        let Value::Len(value) = l.field.value else {
            continue;
        };
        let new = if rest.is_empty() {
            f(value)
        } else {
            let sub_base = base + l.start + (l.field.raw.len() - value.len());
            rewrite_in(value, sub_base, rest, f)?
        };
        if let Some(new) = new {
            let o = out.get_or_insert_with(|| Vec::with_capacity(buf.len() + new.len()));
            o.extend_from_slice(&buf[copied..l.start]);
            o.extend_from_slice(&l.field.raw[..l.tag_len]);
            put_varint(o, new.len() as u64);
            o.extend_from_slice(&new);
            copied = l.start + l.field.raw.len();
        }
    }
    Ok(out.map(|mut o| {
        o.extend_from_slice(&buf[copied..]);
        o
    }))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The length of `v` as a varint: 1 to 10 bytes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests;
