//! One proxied call: open a stream on an upstream endpoint (retrying once elsewhere if it never
//! started), and wait for the response headers while pumping the request body. The response
//! goes back as a [`Response`] whose [`ForwardBody`] streams the upstream's frames and keeps
//! pumping the request, watching the deadline, until the response ends.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::request::Parts;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use super::head::upstream_request;
use super::hold::Unanswered;
use super::pump::{Dir, DirError};
use crate::endpoint::{Endpoint, EndpointState};
use crate::error::ProxyError;
use crate::grpc;
use crate::outlier::Outlier;
use crate::pool::{AcquireError, Lease};
use crate::stack::{Body, BoxError, Response};
use crate::upstream::{Members, Upstream};

/// Counts a stream against its endpoint for as long as it is open.
struct InFlight(Arc<EndpointState>);

impl InFlight {
    fn new(ep: &Endpoint) -> InFlight {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(ep.state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream opened on an endpoint.
pub(super) struct Opened {
    index: usize,
    _lease: Lease,
    pub(super) response: ResponseFuture,
    send: SendStream<Bytes>,
}

/// A call being proxied.
pub struct Call {
    upstream: Arc<Upstream>,
    /// The group's members as the call started (a reload does not move it).
    members: Arc<Members>,
    parts: Parts,
    started: Instant,
    deadline: Option<Instant>,
}

enum Headers {
    Response(Result<http::Response<RecvStream>, h2::Error>),
    Timeout(ProxyError),
}

impl Call {
    /// A call for `parts` (hop-by-hop headers already stripped) to `upstream`.
    pub fn new(upstream: Arc<Upstream>, parts: Parts) -> Call {
        let started = Instant::now();
        let deadline = parts
            .headers
            .get(grpc::GRPC_TIMEOUT)
            .and_then(|v| grpc::parse_timeout(v.as_bytes()))
            .map(|d| started + d);
        Call {
            members: upstream.members(),
            upstream,
            parts,
            started,
            deadline,
        }
    }

    fn deadline_error(&self) -> ProxyError {
        ProxyError::Deadline(self.started.elapsed())
    }

    /// Runs the call until the upstream's response headers arrive (or the gateway ends it).
    /// Dropping the future (the client went away) resets the upstream stream.
    pub async fn run(mut self, body: Body) -> Result<Response, ProxyError> {
        let mut dir = Dir::new(body, true);
        let mut deadline = self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut avoid = None;
        let mut retried = false;
        let mut first_error = None;
        loop {
            // Phase A: an endpoint, a stream slot, a stream.
            let opened = tokio::select! {
                r = self.open(avoid, dir.is_done()) => r,
                _ = sleep_opt(&mut deadline) => Err((None, self.deadline_error())),
            };
            let opened = match opened {
                Ok(o) => o,
                Err((index, e)) => {
                    if e.never_started() && !retried && index.is_some() && dir.can_replay() {
                        retried = true;
                        avoid = index;
                        self.refresh_members(&mut avoid);
                        first_error = Some(e);
                        continue;
                    }
                    // Nowhere left to retry: the first failure says more than "no endpoint".
                    if let (ProxyError::NoHealthyEndpoint(_), Some(first)) = (&e, first_error) {
                        return Err(first);
                    }
                    return Err(e);
                }
            };
            let ep = self.members.endpoints[opened.index].clone();
            let index = opened.index;
            let in_flight = InFlight::new(&ep);
            let sent_at = Instant::now();
            // Until the backend answers, dropping the call hands the stream to `hold`.
            let mut unanswered = Unanswered::new(opened, sent_at);

            // Phase B: response headers, while the request body flows.
            let mut header_timer: Option<Pin<Box<Sleep>>> = self
                .members
                .request_timeout
                .map(|t| Box::pin(tokio::time::sleep(t)));
            let mut req_broken = false;
            let got = poll_fn(|cx| {
                let opened = unanswered.get();
                if !req_broken {
                    if let Poll::Ready(Err(_)) = dir.poll_forward(cx, &mut opened.send) {
                        // The client's side failed (it reset: the server drops this call) or
                        // the upstream stopped reading (its response will say why).
                        req_broken = true;
                    }
                }
                if let Poll::Ready(r) = opened.response.poll_unpin(cx) {
                    return Poll::Ready(Headers::Response(r));
                }
                if let Some(d) = deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Headers::Timeout(self.deadline_error()));
                    }
                }
                if let Some(t) = header_timer.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Headers::Timeout(ProxyError::RequestTimeout {
                            upstream: self.upstream.name.to_string(),
                            timeout: self.members.request_timeout.unwrap_or_default(),
                        }));
                    }
                }
                Poll::Pending
            })
            .await;
            let mut opened = unanswered.settle();
            let resp = match got {
                Headers::Response(Ok(resp)) => resp,
                Headers::Response(Err(e)) => {
                    self.failed(&ep);
                    let err = stream_error(&self.upstream.name, &ep, &e, true);
                    if err.never_started() && !retried && dir.can_replay() {
                        tracing::debug!(upstream = %self.upstream.name, endpoint = %ep.address,
                            error = %e, "stream refused before it started; retrying elsewhere");
                        retried = true;
                        avoid = Some(index);
                        self.refresh_members(&mut avoid);
                        dir.restart();
                        continue;
                    }
                    return Err(err);
                }
                Headers::Timeout(err) => {
                    if let ProxyError::RequestTimeout { .. } = err {
                        self.failed(&ep);
                    }
                    opened.send.send_reset(h2::Reason::CANCEL);
                    return Err(err);
                }
            };
            ep.latency.observe(sent_at.elapsed().as_nanos() as u64);
            dir.forget_replay();
            let (mut head, body) = resp.into_parts();
            grpc::strip_hop_by_hop(&mut head.headers);
            let ep_address = ep.address.clone();
            let body = if body.is_end_stream() {
                // Trailers-only: nothing more will flow either way.
                if let Some(o) = &self.members.outlier {
                    o.record_status(
                        &ep,
                        &self.members.endpoints,
                        grpc::status_code(&head.headers),
                    );
                }
                Body::empty()
            } else {
                Body::boxed(ForwardBody {
                    response: Body::h2(body),
                    request: dir,
                    request_sink: opened.send,
                    request_broken: req_broken,
                    deadline,
                    started: self.started,
                    upstream: self.upstream.name.clone(),
                    endpoint: ep,
                    outlier: self
                        .members
                        .outlier
                        .clone()
                        .map(|o| (o, self.members.clone())),
                    _lease: opened._lease,
                    _in_flight: in_flight,
                })
            };
            let mut resp = Response::from_parts(head, body);
            resp.extensions_mut()
                .insert(crate::interceptor::UpstreamEndpoint(ep_address));
            resp.extensions_mut()
                .insert(crate::interceptor::UpstreamGroup(
                    self.upstream.name.clone(),
                ));
            return Ok(resp);
        }
    }

    /// Picks an endpoint and opens a stream on it. On error, says which endpoint failed.
    async fn open(
        &self,
        avoid: Option<usize>,
        end_of_stream: bool,
    ) -> Result<Opened, (Option<usize>, ProxyError)> {
        let up = &self.members;
        let name = &self.upstream.name;
        let index = up
            .balancer
            .pick(&up.endpoints, avoid, &mut rand::rng())
            .ok_or_else(|| (None, ProxyError::NoHealthyEndpoint(name.to_string())))?;
        let ep = &up.endpoints[index];
        let fail = |e| (Some(index), e);
        let lease = ep.pool.acquire().await.map_err(|e| match e {
            AcquireError::Connect(reason) => {
                let (n, wait) = ep.connect_failed(up.backoff_max);
                crate::pool::log_failure(name, &ep.address, n, wait, &reason);
                self.failed(ep);
                fail(ProxyError::Connect {
                    upstream: name.to_string(),
                    endpoint: ep.address.to_string(),
                    reason,
                })
            }
            AcquireError::Retired => fail(ProxyError::NotStarted {
                upstream: name.to_string(),
                endpoint: ep.address.to_string(),
                reason: "the endpoint left the group".into(),
            }),
            AcquireError::Exhausted(reason) => fail(ProxyError::PoolExhausted {
                upstream: name.to_string(),
                endpoint: ep.address.to_string(),
                reason,
            }),
        })?;
        let mut sender = lease.sender();
        let not_started = |e: h2::Error| {
            fail(ProxyError::NotStarted {
                upstream: name.to_string(),
                endpoint: ep.address.to_string(),
                reason: e.to_string(),
            })
        };
        poll_fn(|cx| sender.poll_ready(cx))
            .await
            .map_err(not_started)?;
        let remaining = match self.deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Err((None, self.deadline_error())),
            },
            None => None,
        };
        let req = upstream_request(&self.parts, &ep.address, remaining);
        let (response, send) = sender
            .send_request(req, end_of_stream)
            .map_err(not_started)?;
        Ok(Opened {
            index,
            _lease: lease,
            response,
            send,
        })
    }
}

impl Call {
    /// Before a retry: when a reload changed the group since the call started, the retry
    /// picks among the new members (the endpoint to avoid may have left; indices changed).
    fn refresh_members(&mut self, avoid: &mut Option<usize>) {
        let now = self.upstream.members();
        if !Arc::ptr_eq(&now, &self.members) {
            self.members = now;
            *avoid = None;
        }
    }

    /// Counts a failed call against `ep` for outlier detection.
    fn failed(&self, ep: &EndpointState) {
        if let Some(o) = &self.members.outlier {
            o.failure(ep, &self.members.endpoints, usize::MAX);
        }
    }
}

async fn sleep_opt(s: &mut Option<Pin<Box<Sleep>>>) {
    match s {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Classifies an upstream stream error. `before_headers`: no response headers yet.
fn stream_error(name: &str, ep: &Endpoint, e: &h2::Error, before_headers: bool) -> ProxyError {
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
    response: Body,
    request: Dir,
    request_sink: SendStream<Bytes>,
    request_broken: bool,
    deadline: Option<Pin<Box<Sleep>>>,
    started: Instant,
    upstream: Arc<str>,
    endpoint: Arc<Endpoint>,
    /// Outlier detection: the policy and the members it counts against.
    outlier: Option<(Arc<Outlier>, Arc<Members>)>,
    _lease: Lease,
    _in_flight: InFlight,
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
