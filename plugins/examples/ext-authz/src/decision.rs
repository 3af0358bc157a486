//! The messages `ext-authz` exchanges and keeps: the `CheckRequest` it sends, the
//! `CheckResponse` it reads, the cache key of a call and a decision's cached encoding, all in
//! the protobuf wire format through the SDK's `wire` module.

use sha2::{Digest, Sha256};
use synapsor_plugin_sdk::wire::{self, WireError, Writer};
use synapsor_plugin_sdk::{Code, HeaderOp, Reject, RequestAction};

/// What the authorization service decided about a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on, setting these headers on the call.
    Allow(Vec<(String, String)>),
    /// End the call with this status (1 to 16) and message.
    Deny { code: u32, message: String },
}

impl Decision {
    /// `allow` or `deny`, the metric label.
    pub fn result(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Deny { .. } => "deny",
        }
    }

    /// What the call gets: the first header of a name replaces the client's values of it
    /// (a client cannot forge `x-authz-user`), later ones of that name are added.
    pub fn action(&self) -> RequestAction {
        match self {
            Decision::Allow(headers) => {
                let mut ops = Vec::with_capacity(headers.len());
                for (i, (name, value)) in headers.iter().enumerate() {
                    if headers[..i].iter().any(|(n, _)| n == name) {
                        ops.push(HeaderOp::append(name, value));
                    } else {
                        ops.push(HeaderOp::set(name, value));
                    }
                }
                RequestAction::Continue(ops)
            }
            Decision::Deny { code, message } => {
                let code = Code::from_u32(*code)
                    .filter(|c| *c != Code::Ok)
                    .unwrap_or(Code::Unknown);
                RequestAction::Reject(Reject::new(code, message.clone()))
            }
        }
    }

    /// The cached form: `{ uint32 code = 1 (0: allow); string message = 2;
    /// repeated Header headers = 3 }`, with `Header { string name = 1; string value = 2; }`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Decision::Allow(headers) => {
                write_headers(&mut w, 3, headers);
            }
            Decision::Deny { code, message } => {
                w.varint(1, u64::from(*code)).string(2, message);
            }
        }
        w.into_bytes()
    }

    /// Reads [`Decision::encode`]'s form back; `None` when it is not that.
    pub fn decode(bytes: &[u8]) -> Option<Decision> {
        let mut code = 0u64;
        let mut message = String::new();
        for f in wire::fields(bytes) {
            let f = f.ok()?;
            match f.number {
                1 => code = f.value.as_varint()?,
                2 => message = f.value.as_str()?.to_string(),
                _ => {}
            }
        }
        if code == 0 {
            return read_headers(bytes, 3).ok().map(Decision::Allow);
        }
        let code = u32::try_from(code).ok()?;
        Some(Decision::Deny { code, message })
    }
}

/// Writes each header as field `number`, a `Header` message.
fn write_headers(w: &mut Writer, number: u32, headers: &[(String, String)]) {
    for (name, value) in headers {
        w.message(number, |h| {
            h.string(1, name).string(2, value);
        });
    }
}

/// The headers in field `number` (each a `Header` message) of `bytes`, names lower-cased;
/// entries without a name are skipped.
fn read_headers(bytes: &[u8], number: u32) -> Result<Vec<(String, String)>, WireError> {
    let mut out = Vec::new();
    for v in wire::get(bytes, &[number])? {
        let h = v.as_bytes().unwrap_or_default();
        let text = |n: u32| -> Result<String, WireError> {
            let v = wire::last(h, &[n])?;
            Ok(v.and_then(|v| v.as_str()).unwrap_or_default().to_string())
        };
        let name = text(1)?.to_ascii_lowercase();
        if !name.is_empty() {
            out.push((name, text(2)?));
        }
    }
    Ok(out)
}

/// `CheckRequest { string method = 1; string principal = 2; repeated Header headers = 3; }`.
pub fn check_request(
    method: &str,
    principal: Option<&str>,
    headers: &[(String, String)],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(1, method);
    if let Some(p) = principal.filter(|p| !p.is_empty()) {
        w.string(2, p);
    }
    write_headers(&mut w, 3, headers);
    w.into_bytes()
}

/// The headers of a `CheckResponse { repeated Header headers = 1; }`.
pub fn check_response(bytes: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    read_headers(bytes, 1)
}

/// The state key of a call's decision: `authz:` and the hex SHA-256 of its method, principal
/// and forwarded headers (70 bytes, whatever their length; a collision-resistant hash, so no
/// two calls that differ in any of them can share a cached decision).
pub fn cache_key(method: &str, principal: Option<&str>, headers: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(method.as_bytes());
    match principal {
        Some(p) => {
            part(b"p");
            part(p.as_bytes());
        }
        None => part(b"-"),
    }
    for (name, value) in headers {
        part(name.as_bytes());
        part(value.as_bytes());
    }
    let digest = h.finalize();
    let mut key = String::with_capacity(6 + 64);
    key.push_str("authz:");
    for b in digest {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

#[cfg(test)]
mod tests;
