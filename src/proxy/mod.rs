//! The per-stream path. [`Forward`] is the innermost service of the stack: route, balance, pool,
//! open the upstream stream (the call phases). [`serve_stream`] is what the server runs for
//! each client stream: check it is gRPC, call the stack, and pump the response it returns back
//! to the client, turning any error into a gRPC status in the one place that does it.

mod call;
mod forward;
mod forward_body;
mod head;
mod hold;
mod pump;

use std::future::poll_fn;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Method, StatusCode};
use http_body::Body as _;
use tower::{Service, ServiceExt};

use crate::error::ProxyError;
use crate::grpc;
use crate::stack::{status_of, Body, BoxError, Request, Response};

pub use forward::{Forward, Stack, Upstreamed};
pub use head::upstream_request;
pub use hold::HeldStreams;
pub use pump::{Dir, DirError};

/// How a stream ended, for the debug log line.
enum Outcome {
    Forwarded,
    Failed(String),
    ClientGone,
    /// The client reset the stream before any response was sent.
    ResetEarly,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Forwarded => f.write_str("forwarded"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::ClientGone => f.write_str("client cancelled"),
            Outcome::ResetEarly => f.write_str("client reset before the response"),
        }
    }
}

/// The client connection a stream came on.
pub struct Client {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The listener it came on, its TLS server name and client certificate identity.
    pub inbound: std::sync::Arc<crate::stack::Inbound>,
    /// Its calls that ended before the upstream answered, per second.
    pub early: crate::stack::ClientEarlyResets,
}

/// Serves one client stream to its end through `svc`. Never panics on client input; every
/// failure is answered with a gRPC status or, for non-gRPC requests, an HTTP status. Returns
/// true when the client reset the stream within [`PREMATURE_RESET`] of opening it (what a
/// "rapid reset" flood does).
pub async fn serve_stream<S>(
    svc: S,
    listener: &str,
    client: Client,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> bool
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    if let Some(status) = not_grpc(&req) {
        let mut resp = http::Response::new(());
        *resp.status_mut() = status;
        let _ = respond.send_response(resp, true);
        return false;
    }
    // The per-call log line costs nothing unless debug logging is on.
    let log = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (req.uri().path().to_owned(), std::time::Instant::now()));
    let mut req = req.map(Body::h2);
    req.extensions_mut()
        .insert(crate::stack::PeerAddr(client.peer));
    req.extensions_mut().insert(client.early);
    if let Some(id) = &client.inbound.client_identity {
        // The client certificate's identity, until an auth stage says otherwise.
        req.extensions_mut()
            .insert(crate::stack::Principal(id.to_string()));
    }
    req.extensions_mut().insert(client.inbound);
    if req.headers().contains_key(grpc::GRPC_TIMEOUT) {
        // The deadline counts from here, not from the forwarder: time in the stages (a plugin
        // waiting on a callout, a Redis round trip) is the client's time too.
        req.extensions_mut()
            .insert(crate::stack::Received(std::time::Instant::now()));
    }
    let started = std::time::Instant::now();
    let outcome = run(svc, req, &mut respond).await;
    if let Some((path, started)) = log {
        tracing::debug!(listener, %path, elapsed = ?started.elapsed(), %outcome, "call");
    }
    matches!(outcome, Outcome::ResetEarly | Outcome::ClientGone)
        && started.elapsed() < PREMATURE_RESET
}

/// A stream the client resets sooner than this after opening it counts towards the
/// connection's rapid-reset limit.
pub const PREMATURE_RESET: std::time::Duration = std::time::Duration::from_secs(1);

async fn run<S>(svc: S, req: Request, respond: &mut SendResponse<Bytes>) -> Outcome
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    let call = svc.oneshot(req);
    tokio::pin!(call);
    // A client that resets before the response starts drops the call (and so the upstream
    // stream). The reset is looked at first, so a stream that was opened and reset in one
    // burst never opens an upstream stream: forwarding such open-and-reset pairs would trip
    // the backend's own rapid-reset limit (h2 and hyper allow 20 pending) on the upstream
    // connection that other clients' calls share.
    let result = tokio::select! {
        biased;
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return Outcome::ResetEarly,
        r = &mut call => r,
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let status = status_of(&e);
            match &status.stage {
                Some(stage) => tracing::debug!(error = %status.message, code = ?status.code,
                    %stage, "call refused by stage {stage}"),
                None => tracing::debug!(error = %status.message, code = ?status.code,
                    "call ended in the gateway"),
            }
            let _ = respond.send_response(status.to_response(), true);
            return Outcome::Failed(status.message);
        }
    };
    let (head, body) = resp.into_parts();
    let eos = body.is_end_stream();
    let Ok(mut client) = respond.send_response(http::Response::from_parts(head, ()), eos) else {
        return Outcome::ClientGone;
    };
    if eos {
        return Outcome::Forwarded;
    }
    let mut dir = Dir::new(body, false);
    let end = poll_fn(|cx| {
        if client.poll_reset(cx).is_ready() {
            return Poll::Ready(Err(None));
        }
        dir.poll_forward(cx, &mut client).map_err(|e| match e {
            DirError::Src(e) => Some(e),
            DirError::Dst(e) => {
                tracing::trace!(error = %e, "writing to the client stream failed");
                None
            }
        })
    })
    .await;
    match end {
        Ok(()) => Outcome::Forwarded,
        Err(None) => Outcome::ClientGone,
        Err(Some(e)) => {
            match e.downcast_ref::<ProxyError>() {
                // An upstream reset passes through as a reset with the same code, as a direct
                // connection would have shown it.
                Some(ProxyError::UpstreamReset { reason, .. }) => client.send_reset(*reason),
                _ => {
                    let _ = client.send_trailers(status_of(&e).to_trailers());
                }
            }
            Outcome::Failed(e.to_string())
        }
    }
}

/// The HTTP status for a request that is not gRPC, or `None` for a gRPC request.
fn not_grpc(req: &http::Request<RecvStream>) -> Option<StatusCode> {
    if req.method() != Method::POST {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !grpc::is_grpc_content_type(req.headers()) {
        return Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    None
}
