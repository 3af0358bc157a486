//! [`Writer`]: building a message field by field.

use super::*;

/// Builds a message field by field, in the order written (the canonical encoding of each).
///
/// Every method that takes a field number panics when it is 0 or over [`MAX_FIELD_NUMBER`]
/// (a bug in the plugin, not in its input).
///
/// ```
/// use synapsor_plugin_sdk::wire::{self, Writer};
/// let input = [0x08, 0x01, 0x62, 0x01, b'?']; // 1: 1, 12: "?" (a field we do not know)
/// let mut w = Writer::new();
/// for f in wire::fields(&input) {
///     let f = f.unwrap();
///     match f.number {
///         1 => { w.varint(1, 2); }
///         _ => { w.field(&f); } // copied through unchanged
///     }
/// }
/// assert_eq!(w.into_bytes(), vec![0x08, 0x02, 0x62, 0x01, b'?']);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// An empty message with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// Writes a tag: `number` and `wire_type`.
    pub fn tag(&mut self, number: u32, wire_type: WireType) -> &mut Self {
        assert!(
            (1..=MAX_FIELD_NUMBER).contains(&number),
            "protobuf field numbers are 1 to {MAX_FIELD_NUMBER}, not {number}"
        );
        put_varint(&mut self.buf, (u64::from(number) << 3) | wire_type as u64);
        self
    }

    /// A varint field (`uint32`, `uint64`, `bool` as 0/1, `enum`, `int32`/`int64` as
    /// `v as u64`).
    pub fn varint(&mut self, number: u32, v: u64) -> &mut Self {
        self.tag(number, WireType::Varint);
        put_varint(&mut self.buf, v);
        self
    }

    /// An `int32`/`int64` field: negative values take 10 bytes.
    pub fn int64(&mut self, number: u32, v: i64) -> &mut Self {
        self.varint(number, v as u64)
    }

    /// A `sint32`/`sint64` field (ZigZag).
    pub fn sint64(&mut self, number: u32, v: i64) -> &mut Self {
        self.varint(number, zigzag_encode(v))
    }

    /// A `bool` field.
    pub fn bool(&mut self, number: u32, v: bool) -> &mut Self {
        self.varint(number, u64::from(v))
    }

    /// A `fixed64`/`sfixed64` field.
    pub fn fixed64(&mut self, number: u32, v: u64) -> &mut Self {
        self.tag(number, WireType::I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `fixed32`/`sfixed32` field.
    pub fn fixed32(&mut self, number: u32, v: u32) -> &mut Self {
        self.tag(number, WireType::I32);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `double` field.
    pub fn double(&mut self, number: u32, v: f64) -> &mut Self {
        self.fixed64(number, v.to_bits())
    }

    /// A `float` field.
    pub fn float(&mut self, number: u32, v: f32) -> &mut Self {
        self.fixed32(number, v.to_bits())
    }

    /// A len-delimited field: `bytes`, or an already encoded message or packed field.
    pub fn bytes(&mut self, number: u32, v: &[u8]) -> &mut Self {
        self.tag(number, WireType::Len);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A `string` field.
    pub fn string(&mut self, number: u32, v: &str) -> &mut Self {
        self.bytes(number, v.as_bytes())
    }

    /// An embedded message field, written by `build`.
    pub fn message(&mut self, number: u32, build: impl FnOnce(&mut Writer)) -> &mut Self {
        let mut sub = Writer::new();
        build(&mut sub);
        self.bytes(number, &sub.buf)
    }

    /// A field with this value, canonically encoded.
    pub fn value(&mut self, number: u32, v: &Value<'_>) -> &mut Self {
        match *v {
            Value::Varint(v) => self.varint(number, v),
            Value::I64(v) => self.fixed64(number, v),
            Value::Len(v) => self.bytes(number, v),
            Value::I32(v) => self.fixed32(number, v),
        }
    }

    /// A field read by [`fields`], copied through exactly as it was read.
    pub fn field(&mut self, f: &Field<'_>) -> &mut Self {
        self.raw(f.raw)
    }

    /// Already encoded fields, appended as they are (not checked).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}
