//! How the request path composes: one request type, one response type, one body type
//! ([`Body`]) and one error type ([`BoxError`]) for every stage, so stages are tower layers over
//! the same service; and [`status_of`], the one place an error becomes a gRPC status.
//!
//! The innermost service is [`crate::proxy::Forward`] (route → balance → pool → pump). The
//! server calls the stack once per stream, sends the response head it returns, and pumps its
//! body to the client.

mod body;

pub use body::Body;

use crate::error::ProxyError;
use crate::grpc::Code;

/// Errors cross service boundaries boxed, as in tower and linkerd.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request as every stage sees it.
pub type Request = http::Request<Body>;

/// A response as every stage sees it.
pub type Response = http::Response<Body>;

/// The gRPC status (code and message) a call ended by `err` is answered with: the one place
/// gateway errors become statuses (DESIGN.md's table).
pub fn status_of(err: &BoxError) -> (Code, String) {
    if let Some(e) = err.downcast_ref::<ProxyError>() {
        return (e.code(), e.to_string());
    }
    if let Some(e) = err.downcast_ref::<h2::Error>() {
        if let Some(r) = e.reason() {
            return (crate::error::reset_code(r), e.to_string());
        }
    }
    (Code::Internal, err.to_string())
}
