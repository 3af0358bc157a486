//! The body of a forwarded response ([`ForwardBody`]), the count of a call's stream against
//! its endpoint ([`InFlight`]), and how an upstream stream's errors are classified.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::SendStream;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use super::pump::{Dir, DirError};
use crate::error::ProxyError;
use crate::grpc;
use crate::stack::{Body, BoxError};
use crate::upstream::endpoint::{Endpoint, EndpointState};
use crate::upstream::outlier::Outlier;
use crate::upstream::pool::Lease;
use crate::upstream::Members;

/// Counts a stream against its endpoint for as long as it is open.
pub(super) struct InFlight(Arc<EndpointState>);

impl InFlight {
    /// Counts one more stream on `ep` until the returned guard drops.
    pub(super) fn new(ep: &Endpoint) -> InFlight {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(ep.state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Classifies an upstream stream error. `before_headers`: no response headers yet.
pub(super) fn stream_error(
    name: &str,
    ep: &Endpoint,
    e: &h2::Error,
    before_headers: bool,
) -> ProxyError {
    let upstream = name.to_string();
    let endpoint = ep.address.to_string();
    if e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM) && before_headers {
        return ProxyError::NotStarted {
            upstream,
            endpoint,
            reason: e.to_string(),
        };
    }
    if e.is_go_away() && e.is_remote() && before_headers && e.reason() == Some(h2::Reason::NO_ERROR)
    {
        // After a graceful GOAWAY, h2 fails only the streams the peer never processed.
        return ProxyError::NotStarted {
            upstream,
            endpoint,
            reason: e.to_string(),
        };
    }
    match e.reason() {
        Some(reason) if e.is_reset() => ProxyError::UpstreamReset { upstream, reason },
        _ => ProxyError::UpstreamLost {
            upstream,
            reason: e.to_string(),
        },
    }
}

/// The body of a forwarded response: the upstream's frames as they arrive. Polling it also keeps
/// the request body flowing upstream (a bidi call's client may still be sending) and watches the
/// deadline. Dropping it before the end resets the upstream stream; the stream slot and the
/// endpoint's in-flight count are given back when it drops.
pub struct ForwardBody {
    pub(super) response: Body,
    pub(super) request: Dir,
    pub(super) request_sink: SendStream<Bytes>,
    pub(super) request_broken: bool,
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
    pub(super) started: Instant,
    pub(super) upstream: Arc<str>,
    pub(super) endpoint: Arc<Endpoint>,
    /// Outlier detection: the policy and the members it counts against.
    pub(super) outlier: Option<(Arc<Outlier>, Arc<Members>)>,
    pub(super) _lease: Lease,
    pub(super) _in_flight: InFlight,
}

impl http_body::Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.request_broken && !this.request.is_done() {
            if let Poll::Ready(Err(e)) = this.request.poll_forward(cx, &mut this.request_sink) {
                // A client that reset is noticed by the server; an upstream that stopped
                // reading says why in its response.
                if let DirError::Src(_) = e {
                    this.request_sink.send_reset(h2::Reason::CANCEL);
                }
                this.request_broken = true;
            }
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                this.request_sink.send_reset(h2::Reason::CANCEL);
                this.request_broken = true;
                let err = ProxyError::Deadline(this.started.elapsed());
                return Poll::Ready(Some(Err(err.into())));
            }
        }
        match Pin::new(&mut this.response).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Only the trailers settle the call; data frames leave the policy in place.
                if let Some(t) = frame.trailers_ref() {
                    if let Some((o, m)) = this.outlier.take() {
                        o.record_status(&this.endpoint, &m.endpoints, grpc::status_code(t));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some((o, m)) = this.outlier.take() {
                    o.failure(&this.endpoint, &m.endpoints, usize::MAX);
                }
                let err = match e.downcast::<h2::Error>() {
                    Ok(h2e) => stream_error(&this.upstream, &this.endpoint, &h2e, false),
                    Err(other) => return Poll::Ready(Some(Err(other))),
                };
                Poll::Ready(Some(Err(err.into())))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.response.is_end_stream()
    }
}
