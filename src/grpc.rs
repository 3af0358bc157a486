//! gRPC wire details the gateway needs without knowing any schema: status codes, trailers-only
//! responses, `grpc-timeout`, and which headers are hop-by-hop.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

/// gRPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The code with this number, if it is one of gRPC's 17.
    pub fn from_u32(n: u32) -> Option<Code> {
        use Code::*;
        const ALL: [Code; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        ALL.get(n as usize).copied()
    }

    /// The code with this name: `UNAVAILABLE`, `unavailable` or `Unavailable` (the spelling
    /// `CANCELED` is accepted too).
    pub fn from_name(name: &str) -> Option<Code> {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALIDARGUMENT",
            "DEADLINEEXCEEDED",
            "NOTFOUND",
            "ALREADYEXISTS",
            "PERMISSIONDENIED",
            "RESOURCEEXHAUSTED",
            "FAILEDPRECONDITION",
            "ABORTED",
            "OUTOFRANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATALOSS",
            "UNAUTHENTICATED",
        ];
        let norm: String = name
            .chars()
            .filter(|&c| c != '_')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let norm = if norm == "CANCELED" {
            "CANCELLED".into()
        } else {
            norm
        };
        NAMES
            .iter()
            .position(|n| *n == norm)
            .and_then(|i| Code::from_u32(i as u32))
    }

    /// The decimal form carried in `grpc-status`.
    pub fn as_header(self) -> HeaderValue {
        const DIGITS: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        HeaderValue::from_static(DIGITS[self as usize])
    }
}

/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The `grpc-status` code in a header or trailer block, if there is one.
pub fn status_code(headers: &HeaderMap) -> Option<usize> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Characters percent-encoded in `grpc-message` (the gRPC spec: anything outside 0x20..0x7E, and %).
const MESSAGE_ESCAPE: &AsciiSet = &CONTROLS.add(b'%');

/// Adds `grpc-status` and a percent-encoded `grpc-message` to a header map. A space at either
/// end is percent-encoded too: an HTTP/2 field value must not start or end with whitespace
/// (RFC 9113 §8.2.1), and peers that check (Rust's h2) fail the stream with PROTOCOL_ERROR.
pub fn put_status(headers: &mut HeaderMap, code: Code, message: &str) {
    headers.insert(GRPC_STATUS, code.as_header());
    if !message.is_empty() {
        let encoded = encode_message(message);
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            headers.insert(GRPC_MESSAGE, v);
        }
    }
}

/// `v` as an HTTP/2 field value, or `None` when it cannot be one: a control character (tab
/// aside), or whitespace at either end (RFC 9113 §8.2.1; a peer that checks — Rust's
/// h2 — fails the whole stream with PROTOCOL_ERROR). For values the gateway puts on a call from
/// outside input (a token's claims, a plugin's answer, the config).
pub fn field_value(v: &str) -> Option<HeaderValue> {
    if v.starts_with([' ', '\t']) || v.ends_with([' ', '\t']) {
        return None;
    }
    HeaderValue::from_str(v).ok()
}

/// `message` percent-encoded for `grpc-message`, with no space at either end.
fn encode_message(message: &str) -> String {
    let encoded = percent_encode(message.as_bytes(), MESSAGE_ESCAPE).to_string();
    let body = encoded.trim_start_matches(' ');
    let lead = encoded.len() - body.len();
    let inner = body.trim_end_matches(' ');
    let trail = body.len() - inner.len();
    if lead + trail == 0 {
        return encoded;
    }
    format!("{}{inner}{}", "%20".repeat(lead), "%20".repeat(trail))
}

/// A trailers-only response: HTTP 200 with `content-type`, `grpc-status` and `grpc-message` in
/// the one HEADERS frame, sent with END_STREAM.
pub fn trailers_only(code: Code, message: &str) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    put_status(h, code, message);
    resp
}

/// The fields of the trailers-only answer to a request whose metadata is larger than the
/// listener's `max_header_list_size` (`limit`, bytes as RFC 9113 §6.5.2 counts them: name and
/// value plus 32 per field): RESOURCE_EXHAUSTED, as gRPC's C core answers metadata over its
/// limit, naming the limit. h2 sends them with `:status 200` and END_STREAM.
pub fn metadata_too_large(limit: u32) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    put_status(
        &mut h,
        Code::ResourceExhausted,
        &format!(
            "request metadata is larger than this listener's max_header_list_size \
             ({limit} bytes, counting 32 per entry)"
        ),
    );
    h
}

/// Most `grpc-timeout` digits the spec allows.
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Parses a `grpc-timeout` value (`1-8 digits` then one of `H M S m u n`).
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    if v.len() < 2 || v.len() > MAX_TIMEOUT_DIGITS + 1 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(match unit[0] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes a remaining budget as `grpc-timeout`, in the finest unit that fits 8 digits
/// (rounded down, never up, so the upstream's deadline is never later than the client's).
pub fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let (value, unit) = if nanos <= MAX {
        (nanos, 'n')
    } else if nanos / 1_000 <= MAX {
        (nanos / 1_000, 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos / 1_000_000, 'm')
    } else if nanos / 1_000_000_000 <= MAX {
        (nanos / 1_000_000_000, 'S')
    } else if nanos / 60_000_000_000 <= MAX {
        (nanos / 60_000_000_000, 'M')
    } else {
        ((nanos / 3_600_000_000_000).min(MAX), 'H')
    };
    HeaderValue::from_str(&format!("{value}{unit}")).expect("ascii digits")
}

/// Connection-specific headers that HTTP/2 forbids and a proxy must not forward.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// True when the content type is `application/grpc` or `application/grpc+…`/`;…`.
pub fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .map(|v| {
            let b = v.as_bytes();
            b.starts_with(b"application/grpc")
                && matches!(b.get(16), None | Some(b'+') | Some(b';'))
        })
        .unwrap_or(false)
}

/// Counts gRPC messages in a stream of DATA chunks without buffering them: each message is a
/// 5-byte prefix (flag, 4-byte big-endian length) and its payload, split across chunks anyhow.
#[derive(Debug, Default)]
pub struct Framing {
    /// Payload bytes still to skip in the current message.
    skip: u64,
    head: [u8; 5],
    head_len: usize,
}

impl Framing {
    /// Feeds one chunk; returns how many messages began in it.
    pub fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut messages = 0;
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(chunk.len());
                self.skip -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let n = (5 - self.head_len).min(chunk.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&chunk[..n]);
            self.head_len += n;
            chunk = &chunk[n..];
            if self.head_len == 5 {
                messages += 1;
                self.skip = u64::from(u32::from_be_bytes([
                    self.head[1],
                    self.head[2],
                    self.head[3],
                    self.head[4],
                ]));
                self.head_len = 0;
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn framing_counts_messages_across_chunk_boundaries() {
        let mut stream = Vec::new();
        for len in [0u32, 3, 100, 70_000] {
            stream.push(0);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for chunk in [1, 2, 5, 7, 4096, stream.len()] {
            let mut f = Framing::default();
            let n: u64 = stream.chunks(chunk).map(|c| f.feed(c)).sum();
            assert_eq!(n, 4, "chunk size {chunk}");
        }
    }

    use super::*;

    #[test]
    fn timeout_round_trips_and_never_grows() {
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"5x"), None);
        assert_eq!(parse_timeout(b"-5S"), None);
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(1234),
            Duration::from_secs(99_999),
            Duration::from_secs(86_400 * 400),
        ] {
            let enc = encode_timeout(d);
            let back = parse_timeout(enc.as_bytes()).unwrap();
            assert!(back <= d, "{d:?} -> {enc:?} -> {back:?}");
        }
    }

    #[test]
    fn grpc_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc_content_type(&h));
        for (v, ok) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpcx", false),
            ("application/json", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_grpc_content_type(&h), ok, "{v}");
        }
    }

    #[test]
    fn field_values_never_start_or_end_with_whitespace() {
        for bad in [" a", "a ", "\ta", "a\t", " ", "a\nb", "a\u{7f}"] {
            assert!(field_value(bad).is_none(), "{bad:?}");
        }
        for good in ["", "a", "a b", "Bearer x.y.z"] {
            assert_eq!(field_value(good).unwrap(), good);
        }
    }

    #[test]
    fn a_message_never_starts_or_ends_with_a_space() {
        for (message, wire) in [
            ("may not call ", "may not call%20"),
            ("  a b ", "%20%20a b%20"),
            (" ", "%20"),
            ("x", "x"),
        ] {
            let mut h = HeaderMap::new();
            put_status(&mut h, Code::Aborted, message);
            assert_eq!(h[GRPC_MESSAGE], wire, "{message:?}");
        }
    }

    #[test]
    fn message_is_percent_encoded() {
        let mut h = HeaderMap::new();
        put_status(&mut h, Code::Unavailable, "no endpoint: 100% down\n");
        assert_eq!(h[GRPC_STATUS], "14");
        assert_eq!(h[GRPC_MESSAGE], "no endpoint: 100%25 down%0A");
    }
}
