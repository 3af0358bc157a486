//! How the request path composes: one request type, one response type, one body type
//! ([`Body`]) and one error type ([`BoxError`]) for every stage, so stages are tower layers over
//! the same service; and [`status_of`], the one place an error becomes a gRPC status.
//!
//! The innermost service is the proxy's forwarder (route → balance → pool → pump). The
//! server calls the stack once per stream, sends the response head it returns, and pumps its
//! body to the client.

mod body;
mod callee;
mod context;

pub use body::{Body, Seen, Watch};
pub use callee::{set_worker, worker, CallFuture, Callee};
pub use context::{
    ClientEarlyResets, Inbound, PeerAddr, Principal, PrincipalSlot, Received, Rejected,
    UpstreamEndpoint, UpstreamGroup,
};

use http::HeaderMap;

use crate::error::ProxyError;
use crate::grpc::{self, Code};

pub use crate::error::BoxError;

/// A service of the request path, boxed: what stages wrapped around an inner service become.
pub type BoxService = tower::util::BoxCloneSyncService<Request, Response, BoxError>;

/// A request as every stage sees it.
pub type Request = http::Request<Body>;

/// A response as every stage sees it.
pub type Response = http::Response<Body>;

/// The status a call the gateway ends is answered with.
#[derive(Debug)]
pub struct Status {
    /// `grpc-status`.
    pub code: Code,
    /// `grpc-message`.
    pub message: String,
    /// Extra trailers (`grpc-retry-pushback-ms`, …).
    pub trailers: HeaderMap,
    /// The stage that refused the call (`rate_limit`, `wasm:NAME`), or `None` when the gateway
    /// itself ended it (no route, no endpoint, a deadline…).
    pub stage: Option<String>,
}

impl Status {
    /// The trailer block carrying this status.
    pub fn to_trailers(&self) -> HeaderMap {
        let mut t = self.trailers.clone();
        grpc::put_status(&mut t, self.code, &self.message);
        t
    }

    /// A trailers-only response carrying this status.
    pub fn to_response(&self) -> http::Response<()> {
        let mut r = grpc::trailers_only(self.code, &self.message);
        for (k, v) in &self.trailers {
            r.headers_mut().insert(k, v.clone());
        }
        r
    }
}

/// The status a call ended by `err` is answered with: the one place gateway errors become gRPC
/// statuses (the table in docs/ARCHITECTURE.md).
pub fn status_of(err: &BoxError) -> Status {
    let mut stage = None;
    let (code, message, trailers) = if let Some(e) = err.downcast_ref::<ProxyError>() {
        (e.code(), e.to_string(), HeaderMap::new())
    } else if let Some(r) = err.downcast_ref::<Rejected>() {
        stage = Some(r.origin());
        (r.code, r.message.clone(), r.trailers())
    } else if let Some(r) = err.downcast_ref::<h2::Error>().and_then(|e| e.reason()) {
        (
            crate::error::reset_code(r),
            err.to_string(),
            HeaderMap::new(),
        )
    } else {
        (Code::Internal, err.to_string(), HeaderMap::new())
    };
    Status {
        code,
        message,
        trailers,
        stage,
    }
}
