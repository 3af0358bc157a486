//! The per-stream path: check the request is gRPC, route it, and run the [`call`] that opens the
//! upstream stream and pumps both directions.

mod call;
mod head;
mod pump;

use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Method, Request, Response, StatusCode};

use crate::error::ProxyError;
use crate::grpc;
use crate::route::Router;

pub use head::upstream_request;
pub use pump::{Dir, DirError};

/// What a listener needs to serve a stream.
pub struct Proxy {
    /// The listener's name, for logs.
    pub listener: Arc<str>,
    /// Its routing table.
    pub router: Router,
}

impl Proxy {
    /// Serves one client stream to its end. Never panics on client input; every failure is
    /// answered with a gRPC status or, for non-gRPC requests, an HTTP status.
    pub async fn serve_stream(&self, req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        if let Some(status) = not_grpc(&req) {
            let mut resp = Response::new(());
            *resp.status_mut() = status;
            let _ = respond.send_response(resp, true);
            return;
        }
        let (mut parts, body) = req.into_parts();
        let Some(upstream) = self.router.route(&parts).cloned() else {
            let path = parts.uri.path().to_string();
            reply_error(&mut respond, &ProxyError::NoRoute(path));
            return;
        };
        grpc::strip_hop_by_hop(&mut parts.headers);
        // The per-call log line costs nothing unless debug logging is on.
        let log = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (parts.uri.path().to_owned(), std::time::Instant::now()));
        let name = upstream.name.clone();
        let outcome = call::Call::new(upstream, parts).run(body, respond).await;
        if let Some((path, started)) = log {
            tracing::debug!(listener = %self.listener, %path, upstream = %name,
                elapsed = ?started.elapsed(), %outcome, "call");
        }
    }
}

/// The HTTP status for a request that is not gRPC, or `None` for a gRPC request.
fn not_grpc(req: &Request<RecvStream>) -> Option<StatusCode> {
    if req.method() != Method::POST {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !grpc::is_grpc_content_type(req.headers()) {
        return Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    None
}

/// Answers a call the gateway ends itself, before any response headers went out: a
/// trailers-only response carrying the status of `err` (the one place errors become statuses).
pub fn reply_error(respond: &mut SendResponse<Bytes>, err: &ProxyError) {
    tracing::debug!(error = %err, code = ?err.code(), "call failed in the gateway");
    let _ = respond.send_response(grpc::trailers_only(err.code(), &err.to_string()), true);
}

/// Ends a call whose response headers were already sent: trailers carrying the status of `err`.
pub fn trailer_error(send: &mut h2::SendStream<Bytes>, err: &ProxyError) {
    tracing::debug!(error = %err, code = ?err.code(), "call failed in the gateway");
    let mut t = http::HeaderMap::new();
    grpc::put_status(&mut t, err.code(), &err.to_string());
    let _ = send.send_trailers(t);
}
