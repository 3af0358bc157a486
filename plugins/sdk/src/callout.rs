//! Unary gRPC calls from a plugin to an upstream group of the gateway (contract 0.2.1).
//!
//! The gateway makes the call through its own balancer, connection pool, TLS and health
//! state, to a group the plugin's YAML lists under `callouts.groups`:
//!
//! ```yaml
//! - wasm:
//!     name: authz
//!     path: plugins/build/ext_authz.wasm
//!     callouts: { groups: [authz], timeout: 200ms, max_in_flight: 256, max_per_hook: 4 }
//! ```
//!
//! A [`Call`] is built step by step and sent with [`Call::send`], which returns when the whole
//! answer is in (the instance waits; the gateway's worker does not):
//!
//! ```no_run
//! use std::time::Duration;
//! use synapsor_plugin_sdk::{wire::Writer, Call, CalloutError, Code, RequestAction};
//!
//! fn check(token: &str) -> RequestAction {
//!     let mut w = Writer::new();
//!     w.string(1, "/pkg.Svc/Get");
//!     let answer = Call::new("authz", "/acme.Authz/Check")
//!         .metadata("authorization", format!("Bearer {token}"))
//!         .message(w.into_bytes())
//!         .timeout(Duration::from_millis(100))
//!         .send();
//!     match answer {
//!         // resp.message: the answer's bytes; resp.header(..), resp.trailer(..)
//!         Ok(_resp) => RequestAction::proceed(),
//!         Err(CalloutError::Status(st)) => RequestAction::Reject(st.to_reject()),
//!         Err(e) => RequestAction::reject(Code::Unavailable, e.to_string()),
//!     }
//! }
//! ```
//!
//! Shapes and units: the method is the gRPC path `/package.Service/Method`; metadata names are
//! lower-case (this module lower-cases them), without pseudo-headers and without `te`,
//! `content-type`, `grpc-timeout` and `grpc-encoding`, which the gateway sets; the message is
//! the serialized request (at most the plugin's `max_message_size`, sent uncompressed); the
//! timeout is in whole milliseconds, at most (and by default) the YAML's `callouts.timeout`,
//! and is sent to the service as `grpc-timeout`.
//!
//! A call fails with a [`CalloutError`]: `NotAllowed` (the group is not in `callouts.groups`,
//! or the call was made in `init`), `Limited` (`callouts.max_in_flight` calls of the plugin
//! already waiting, or `callouts.max_per_hook` made in this hook), `Timeout`, `Unavailable`
//! (no endpoint in rotation, connection refused or reset), `Status` (the service answered
//! with a status other than OK) and `Invalid` (a malformed request or answer).

use std::fmt;
use std::time::Duration;

use crate::bindings::synapsor::plugin::callout as wit;
use crate::{Code, Header, Reject};

pub use wit::{Response, Status};

/// A unary gRPC call to an upstream group, built step by step and made with [`Call::send`].
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    request: wit::Request,
}

impl Call {
    /// A call of `method` (`/package.Service/Method`) on the upstream group `group`, with no
    /// metadata, an empty message and the YAML's `callouts.timeout`.
    pub fn new(group: impl Into<String>, method: impl Into<String>) -> Call {
        Call {
            request: wit::Request {
                group: group.into(),
                method: method.into(),
                metadata: Vec::new(),
                message: Vec::new(),
                timeout_ms: None,
            },
        }
    }

    /// Adds a metadata entry (its name lower-cased); call again to add more, also of the same
    /// name. Values of names ending in `-bin` are base64 text, as on the wire.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Call {
        self.request.metadata.push(Header {
            name: name.into().to_ascii_lowercase(),
            value: value.into(),
        });
        self
    }

    /// Sets the request message: the serialized request (see [`crate::wire::Writer`]).
    pub fn message(mut self, bytes: impl Into<Vec<u8>>) -> Call {
        self.request.message = bytes.into();
        self
    }

    /// Sets the longest wait for the whole answer, rounded up to whole milliseconds (at most
    /// `callouts.timeout`; the gateway uses the lesser).
    pub fn timeout(mut self, timeout: Duration) -> Call {
        self.request.timeout_ms = Some(millis_u32(timeout));
        self
    }

    /// The request as the gateway will get it.
    pub fn request(&self) -> &wit::Request {
        &self.request
    }

    /// Makes the call and waits for its answer: the [`Response`] of a call that ended with
    /// status OK, or why it failed.
    pub fn send(&self) -> Result<Response, CalloutError> {
        wit::call(&self.request).map_err(CalloutError::from)
    }
}

/// `d` in milliseconds, rounded up, at most `u32::MAX`.
fn millis_u32(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

impl Response {
    /// The first value of response header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The first value of trailer `name` (lower-case), if present.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        find(&self.trailers, name)
    }
}

impl Status {
    /// The status code; [`Code::Unknown`] for a number outside 0 to 16 (the gateway sends 1 to
    /// 16).
    pub fn code(&self) -> Code {
        Code::from_u32(self.code).unwrap_or(Code::Unknown)
    }

    /// The first value of trailer `name` (lower-case), if present.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        find(&self.trailers, name)
    }

    /// A refusal that relays this status to the client: its code (UNKNOWN when it is not 1
    /// to 16) and message, without the service's trailers (add those to relay with
    /// [`Reject::with_trailer`]).
    pub fn to_reject(&self) -> Reject {
        let code = match self.code() {
            Code::Ok => Code::Unknown,
            c => c,
        };
        Reject::new(code, self.message.clone())
    }
}

/// Why a callout failed; mirrors the contract's `callout.error`.
#[derive(Clone, Debug, PartialEq)]
pub enum CalloutError {
    /// The group is not in the plugin's `callouts.groups`, or the call was made in `init`.
    NotAllowed(String),
    /// Over a bound: `callouts.max_in_flight` calls of the plugin already waiting, or
    /// `callouts.max_per_hook` calls made in this hook.
    Limited(String),
    /// No whole answer within the timeout.
    Timeout,
    /// The group could not be reached (no endpoint in rotation, connection refused or reset,
    /// the stream reset); the gateway's forwarding error as text.
    Unavailable(String),
    /// The service answered with a status other than OK.
    Status(Status),
    /// The request was malformed (a bad method, header or a message too large), or the answer
    /// was (not gRPC, more than one message, a message too large).
    Invalid(String),
}

impl CalloutError {
    /// The kind of failure, as the contract names it: `not-allowed`, `limited`, `timeout`,
    /// `unavailable`, `status` or `invalid` (a metric label, say).
    pub fn kind(&self) -> &'static str {
        match self {
            CalloutError::NotAllowed(_) => "not-allowed",
            CalloutError::Limited(_) => "limited",
            CalloutError::Timeout => "timeout",
            CalloutError::Unavailable(_) => "unavailable",
            CalloutError::Status(_) => "status",
            CalloutError::Invalid(_) => "invalid",
        }
    }

    /// The service's status, when it answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            CalloutError::Status(s) => Some(s),
            _ => None,
        }
    }
}

impl From<wit::Error> for CalloutError {
    fn from(e: wit::Error) -> CalloutError {
        match e {
            wit::Error::NotAllowed(s) => CalloutError::NotAllowed(s),
            wit::Error::Limited(s) => CalloutError::Limited(s),
            wit::Error::Timeout => CalloutError::Timeout,
            wit::Error::Unavailable(s) => CalloutError::Unavailable(s),
            wit::Error::Status(s) => CalloutError::Status(s),
            wit::Error::Invalid(s) => CalloutError::Invalid(s),
        }
    }
}

/// `kind: detail` (`timeout` alone), and for a status `status <code> (<NAME>): <message>`,
/// such as `status 7 (PERMISSION_DENIED): token t may not call /a.B/C`.
impl fmt::Display for CalloutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalloutError::NotAllowed(s)
            | CalloutError::Limited(s)
            | CalloutError::Unavailable(s)
            | CalloutError::Invalid(s) => write!(f, "{}: {s}", self.kind()),
            CalloutError::Timeout => f.write_str("timeout"),
            CalloutError::Status(s) => {
                write!(f, "status {} ({}): {}", s.code, s.code().name(), s.message)
            }
        }
    }
}

impl std::error::Error for CalloutError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u32, message: &str) -> Status {
        Status {
            code,
            message: message.into(),
            trailers: vec![Header {
                name: "x-why".into(),
                value: "policy".into(),
            }],
        }
    }

    #[test]
    fn builds_the_request() {
        let c = Call::new("authz", "/a.B/C")
            .metadata("Authorization", "Bearer x")
            .metadata("x-a", "1")
            .message(&b"\x0a\x01z"[..])
            .timeout(Duration::from_micros(1500));
        let r = c.request();
        assert_eq!((r.group.as_str(), r.method.as_str()), ("authz", "/a.B/C"));
        assert_eq!(r.metadata[0].name, "authorization");
        assert_eq!(r.metadata.len(), 2);
        assert_eq!(r.message, b"\x0a\x01z");
        assert_eq!(r.timeout_ms, Some(2));
        assert_eq!(Call::new("g", "/m").request().timeout_ms, None);
    }

    #[test]
    fn timeouts_round_up_and_saturate() {
        assert_eq!(millis_u32(Duration::ZERO), 0);
        assert_eq!(millis_u32(Duration::from_nanos(1)), 1);
        assert_eq!(millis_u32(Duration::from_millis(200)), 200);
        assert_eq!(millis_u32(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn statuses_become_refusals() {
        let st = status(7, "no");
        assert_eq!(st.code(), Code::PermissionDenied);
        assert_eq!(st.trailer("x-why"), Some("policy"));
        let r = st.to_reject();
        assert_eq!((r.code, r.message.as_str()), (7, "no"));
        assert!(r.trailers.is_empty());
        assert_eq!(status(0, "").to_reject().code, Code::Unknown as u32);
        assert_eq!(status(99, "").to_reject().code, Code::Unknown as u32);
    }

    #[test]
    fn errors_display_their_kind() {
        let e = CalloutError::from(wit::Error::Status(status(16, "no credentials")));
        assert_eq!(e.to_string(), "status 16 (UNAUTHENTICATED): no credentials");
        assert_eq!(e.status().map(|s| s.code), Some(16));
        let e = CalloutError::from(wit::Error::Unavailable("connection refused".into()));
        assert_eq!(e.to_string(), "unavailable: connection refused");
        assert_eq!(CalloutError::Timeout.to_string(), "timeout");
        assert_eq!(CalloutError::NotAllowed("g".into()).kind(), "not-allowed");
        assert!(CalloutError::Timeout.status().is_none());
    }
}
