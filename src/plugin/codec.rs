//! gRPC messages on the wire, for the message hooks: the Length-Prefixed-Message framing (a
//! compressed-flag byte, a 4-byte big-endian length, the payload; "gRPC over HTTP/2",
//! PROTOCOL-HTTP2.md) and the two compressions gRPC names that the gateway reads and writes:
//! `gzip` (RFC 1952) and `deflate` (the zlib format of RFC 1950, as gRPC's implementations send
//! it), through `flate2`.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

/// The length of a message's prefix: the flag byte and the 4-byte length.
pub const PREFIX: usize = 5;

/// How a call's compressed messages are encoded (`grpc-encoding`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No `grpc-encoding` (or `identity`): a message flagged compressed is malformed.
    Identity,
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib).
    Deflate,
    /// Anything else, as named (`snappy`, `zstd`, …).
    Unknown(String),
}

impl Encoding {
    /// The encoding `headers` declare.
    pub fn of(headers: &HeaderMap) -> Encoding {
        match headers.get("grpc-encoding").map(|v| v.as_bytes()) {
            None | Some(b"identity") => Encoding::Identity,
            Some(b"gzip") => Encoding::Gzip,
            Some(b"deflate") => Encoding::Deflate,
            Some(other) => Encoding::Unknown(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// Its name, as in `grpc-encoding`.
    pub fn name(&self) -> &str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Unknown(n) => n,
        }
    }
}

/// A message the gateway cannot show a plugin.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Decompressed, it is larger than the limit.
    TooLarge,
    /// It is compressed with an encoding the gateway does not read (or none was declared).
    Encoding,
    /// Its compressed bytes are corrupt.
    Corrupt(String),
}

/// The header of the message at the start of `buf`, once all five bytes are there: whether it
/// is compressed and its payload length. `Err` for a flag other than 0 or 1.
pub fn header(buf: &[u8]) -> Option<Result<(bool, usize), u8>> {
    let prefix: [u8; PREFIX] = buf.get(..PREFIX)?.try_into().ok()?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    Some(match prefix[0] {
        0 => Ok((false, len)),
        1 => Ok((true, len)),
        flag => Err(flag),
    })
}

/// The payload of a compressed message, decompressed; at most `limit` bytes.
pub fn decompress(enc: &Encoding, data: &[u8], limit: usize) -> Result<Vec<u8>, Unreadable> {
    let mut out = Vec::new();
    // One byte past the limit tells "too large" from "exactly the limit".
    let take = limit as u64 + 1;
    let read = match enc {
        Encoding::Gzip => flate2::read::GzDecoder::new(data)
            .take(take)
            .read_to_end(&mut out),
        Encoding::Deflate => flate2::read::ZlibDecoder::new(data)
            .take(take)
            .read_to_end(&mut out),
        Encoding::Identity | Encoding::Unknown(_) => return Err(Unreadable::Encoding),
    };
    match read {
        Err(e) => Err(Unreadable::Corrupt(e.to_string())),
        Ok(_) if out.len() > limit => Err(Unreadable::TooLarge),
        Ok(_) => Ok(out),
    }
}

/// `data` compressed with `enc` (gzip or deflate; anything else is returned as it is, which
/// the caller never asks for).
pub fn compress(enc: &Encoding, data: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::default();
    let written = match enc {
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), level);
            w.write_all(data).and_then(|()| w.finish())
        }
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(Vec::new(), level);
            w.write_all(data).and_then(|()| w.finish())
        }
        Encoding::Identity | Encoding::Unknown(_) => return data.to_vec(),
    };
    // Writing into a Vec cannot fail.
    written.unwrap_or_default()
}

/// One whole message: the prefix and `payload`.
pub fn frame(compressed: bool, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(PREFIX + payload.len());
    b.put_u8(u8::from(compressed));
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_and_deflate_round_trip_and_decompression_is_bounded() {
        let data = vec![7u8; 10_000];
        for enc in [Encoding::Gzip, Encoding::Deflate] {
            let packed = compress(&enc, &data);
            assert!(packed.len() < 200, "{enc:?} compresses");
            assert_eq!(decompress(&enc, &packed, 10_000).unwrap(), data);
            assert_eq!(decompress(&enc, &packed, 9_999), Err(Unreadable::TooLarge));
            assert!(matches!(
                decompress(&enc, &packed[..packed.len() / 2], 10_000),
                Err(Unreadable::Corrupt(_))
            ));
        }
        let zstd = Encoding::Unknown("zstd".into());
        assert_eq!(decompress(&zstd, b"x", 10), Err(Unreadable::Encoding));
        assert_eq!(
            decompress(&Encoding::Identity, b"x", 10),
            Err(Unreadable::Encoding)
        );
    }

    #[test]
    fn headers_are_read_once_complete() {
        let f = frame(true, b"hello");
        assert_eq!(header(&f), Some(Ok((true, 5))));
        assert_eq!(header(&f[..4]), None);
        assert_eq!(header(&[2, 0, 0, 0, 0]), Some(Err(2)));
        assert_eq!(&f[PREFIX..], b"hello");
    }

    #[test]
    fn the_encoding_is_read_from_grpc_encoding() {
        let mut h = HeaderMap::new();
        assert_eq!(Encoding::of(&h), Encoding::Identity);
        h.insert("grpc-encoding", "gzip".parse().unwrap());
        assert_eq!(Encoding::of(&h), Encoding::Gzip);
        h.insert("grpc-encoding", "zstd".parse().unwrap());
        assert_eq!(Encoding::of(&h).name(), "zstd");
    }
}
