//! Between the gateway's types and the WIT types: what a plugin is shown of a call, and checking
//! and applying what it returns. A plugin's answer is untrusted input: every header it asks for
//! must be legal HTTP/2, and the list is bounded.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;

use super::bindings::{Header, HeaderOp, Reject, ResponseInfo};
use crate::grpc::{self, Code};
use crate::stack::Request;
use crate::stack::{PeerAddr, Principal, Rejected};

/// Most header operations (or reject trailers) one answer may carry.
pub const MAX_OPS: usize = 64;
/// The longest header name a plugin may set.
const MAX_NAME: usize = 256;
/// The longest header value a plugin may set.
const MAX_VALUE: usize = 8 << 10;
/// The most bytes of names and values one answer may add.
const MAX_TOTAL: usize = 32 << 10;
/// The longest status message a plugin may give.
const MAX_MESSAGE: usize = 4 << 10;

/// Headers a plugin may never touch: connection-level ones, and those the gateway owns.
const RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
    "content-type",
    // Says how the messages in the body are compressed; changing it alone breaks every one.
    "grpc-encoding",
];

/// gRPC's status fields (the gRPC over HTTP/2 spec): only a status sets them.
const STATUS_FIELDS: &[&str] = &["grpc-status", "grpc-message", "grpc-status-details-bin"];

static CALL_IDS: AtomicU64 = AtomicU64::new(1);

/// A new call id.
pub fn next_call_id() -> u64 {
    CALL_IDS.fetch_add(1, Ordering::Relaxed)
}

/// The metadata of a header map, as the plugin sees it (without the headers gRPC fixes).
pub fn header_list(h: &HeaderMap) -> Vec<Header> {
    h.iter()
        .filter(|(n, _)| !hidden(n))
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect()
}

/// Request headers a plugin is not shown: fixed by gRPC (`te`, `content-type`), or shown as a
/// field (`grpc-timeout` is `deadline-ms`). Each entry shown costs two string copies into the
/// plugin's memory on every call.
fn hidden(name: &HeaderName) -> bool {
    *name == http::header::TE || *name == http::header::CONTENT_TYPE || *name == grpc::GRPC_TIMEOUT
}

/// What `on-request` is shown of `req`.
pub fn request_info(req: &Request, call_id: u64) -> super::bindings::RequestInfo {
    let uri = req.uri();
    super::bindings::RequestInfo {
        call_id,
        method: uri.path().to_string(),
        authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        metadata: header_list(req.headers()),
        peer: req
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.to_string())
            .unwrap_or_default(),
        principal: req.extensions().get::<Principal>().map(|p| p.0.clone()),
        deadline_ms: req
            .headers()
            .get(grpc::GRPC_TIMEOUT)
            .and_then(|v| grpc::parse_timeout(v.as_bytes()))
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
    }
}

/// What `on-response` is shown of a call that ended with `block` (trailers, or the headers of a
/// trailers-only answer); `headers` are the response headers sent before, if any.
pub fn response_info(
    call_id: u64,
    method: &str,
    headers: Vec<Header>,
    block: &HeaderMap,
) -> ResponseInfo {
    let status = grpc::status_code(block).map_or(Code::Unknown as u32, |c| c as u32);
    let message = block
        .get(grpc::GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let trailers = block
        .iter()
        .filter(|(n, _)| **n != grpc::GRPC_STATUS && **n != grpc::GRPC_MESSAGE)
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect();
    ResponseInfo {
        call_id,
        method: method.to_string(),
        status,
        message,
        headers,
        trailers,
    }
}

/// A checked header operation.
pub enum Op {
    /// Replace.
    Set(HeaderName, HeaderValue),
    /// Add.
    Append(HeaderName, HeaderValue),
    /// Drop.
    Remove(HeaderName),
}

/// Where checked operations are applied: request metadata, or a status-bearing block where
/// `grpc-status` and `grpc-message` are reserved too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Request metadata.
    Request,
    /// Trailers (or trailers-only headers).
    Status,
}

fn name(n: &str, target: Target) -> Result<HeaderName, String> {
    if n.starts_with(':') {
        return Err(format!("pseudo-header {n:?} cannot be changed"));
    }
    if n.is_empty() || n.len() > MAX_NAME {
        return Err(format!("header name of {} bytes", n.len()));
    }
    if n.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("header name {n:?} is not lower case"));
    }
    let h = HeaderName::from_bytes(n.as_bytes())
        .map_err(|_| format!("{n:?} is not a legal header name"))?;
    if RESERVED.contains(&h.as_str()) {
        return Err(format!("header {n:?} belongs to the gateway"));
    }
    if STATUS_FIELDS.contains(&h.as_str()) {
        // A request carrying them would reach the backend as if a status had been decided;
        // in a status block they are set through the status. Either way, not a header op.
        return Err(format!(
            "{n:?} belongs to the gRPC status: a plugin sets it by rejecting the call or \
             overriding its status{}",
            if target == Target::Request {
                ", never on a request"
            } else {
                ""
            }
        ));
    }
    Ok(h)
}

fn value(n: &str, v: &str) -> Result<HeaderValue, String> {
    if v.len() > MAX_VALUE {
        return Err(format!("value of {n:?} is {} bytes", v.len()));
    }
    if v.starts_with([' ', '\t']) || v.ends_with([' ', '\t']) {
        return Err(format!(
            "value of {n:?} starts or ends with whitespace, which HTTP/2 forbids"
        ));
    }
    grpc::field_value(v).ok_or_else(|| format!("value of {n:?} is not a legal header value"))
}

/// Checks a plugin's header operations.
pub fn check_ops(ops: &[HeaderOp], target: Target) -> Result<Vec<Op>, String> {
    if ops.len() > MAX_OPS {
        return Err(format!(
            "{} header operations (at most {MAX_OPS})",
            ops.len()
        ));
    }
    let mut total = 0;
    ops.iter()
        .map(|op| {
            let op = match op {
                HeaderOp::Set(h) => Op::Set(name(&h.name, target)?, value(&h.name, &h.value)?),
                HeaderOp::Append(h) => {
                    Op::Append(name(&h.name, target)?, value(&h.name, &h.value)?)
                }
                HeaderOp::Remove(n) => Op::Remove(name(n, target)?),
            };
            total += match op {
                Op::Set(ref n, ref v) | Op::Append(ref n, ref v) => n.as_str().len() + v.len(),
                Op::Remove(ref n) => n.as_str().len(),
            };
            if total > MAX_TOTAL {
                return Err(format!("header operations add more than {MAX_TOTAL} bytes"));
            }
            Ok(op)
        })
        .collect()
}

/// Applies checked operations, in order.
pub fn apply(ops: Vec<Op>, h: &mut HeaderMap) {
    for op in ops {
        match op {
            Op::Set(n, v) => {
                h.insert(n, v);
            }
            Op::Append(n, v) => {
                h.append(n, v);
            }
            Op::Remove(n) => {
                h.remove(n);
            }
        }
    }
}

fn message(m: &str) -> Result<(), String> {
    if m.len() > MAX_MESSAGE {
        return Err(format!("status message of {} bytes", m.len()));
    }
    Ok(())
}

/// Checks a plugin's rejection and turns it into the gateway's.
pub fn rejection(r: &Reject) -> Result<Rejected, String> {
    let code = match Code::from_u32(r.code) {
        Some(Code::Ok) | None => return Err(format!("rejection with status code {}", r.code)),
        Some(c) => c,
    };
    message(&r.message)?;
    let trailers: Vec<HeaderOp> = r.trailers.iter().cloned().map(HeaderOp::Append).collect();
    let mut extra = HeaderMap::new();
    apply(check_ops(&trailers, Target::Status)?, &mut extra);
    Ok(Rejected {
        extra: (!extra.is_empty()).then(|| Box::new(extra)),
        ..Rejected::new(code, r.message.clone())
    })
}

/// Checks a status override.
pub fn status_override(code: u32, msg: &str) -> Result<Code, String> {
    message(msg)?;
    Code::from_u32(code).ok_or_else(|| format!("status code {code} is not a gRPC code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> HeaderOp {
        HeaderOp::Set(Header {
            name: name.into(),
            value: value.into(),
        })
    }

    #[test]
    fn values_with_whitespace_at_an_end_are_refused() {
        for v in ["a ", " a", "a\t", "\ta", " "] {
            let e = check_ops(&[set("x-a", v)], Target::Request).err();
            assert!(e.is_some_and(|e| e.contains("whitespace")), "{v:?}");
        }
        assert!(check_ops(&[set("x-a", "a b")], Target::Request).is_ok());
        assert!(check_ops(&[set("x-a", "")], Target::Request).is_ok());
    }
}
