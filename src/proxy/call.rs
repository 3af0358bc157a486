//! One proxied call: open a stream on an upstream endpoint (retrying once elsewhere if it never
//! started), wait for the response headers while pumping the request body, then pump both
//! directions until the response ends. Deadlines, `request_timeout` and cancellation from either
//! side are watched throughout, in one task and one future per phase.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::FutureExt;
use h2::client::ResponseFuture;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::request::Parts;
use http::Response;
use tokio::time::{Instant, Sleep};

use super::head::upstream_request;
use super::pump::{Dir, DirError};
use super::{reply_error, trailer_error};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::grpc;
use crate::pool::{AcquireError, Lease};
use crate::upstream::Upstream;

/// How a call ended, for the debug log line.
pub enum Outcome {
    /// The upstream's response (whatever its status) reached the client.
    Forwarded,
    /// The gateway ended the call with this error.
    Failed(ProxyError),
    /// The client went away.
    ClientGone,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Forwarded => f.write_str("forwarded"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::ClientGone => f.write_str("client cancelled"),
        }
    }
}

/// Counts a stream against its endpoint for as long as it is open.
struct InFlight(Arc<Endpoint>);

impl InFlight {
    fn new(ep: &Arc<Endpoint>) -> InFlight {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(ep.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream opened on an endpoint.
struct Opened {
    index: usize,
    _lease: Lease,
    response: ResponseFuture,
    send: SendStream<Bytes>,
}

/// A call being proxied.
pub struct Call {
    upstream: Arc<Upstream>,
    parts: Parts,
    started: Instant,
    deadline: Option<Instant>,
}

enum Headers {
    Response(Result<Response<RecvStream>, h2::Error>),
    ClientGone,
    Timeout(ProxyError),
}

enum Streaming {
    Done,
    ClientGone,
    UpstreamFailed(h2::Error),
    Deadline,
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
            upstream,
            parts,
            started,
            deadline,
        }
    }

    fn deadline_error(&self) -> ProxyError {
        ProxyError::Deadline(self.started.elapsed())
    }

    /// Runs the call to its end.
    pub async fn run(self, body: RecvStream, mut respond: SendResponse<Bytes>) -> Outcome {
        let mut dir = Dir::new(body, true);
        let mut deadline = self.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut avoid = None;
        let mut retried = false;
        loop {
            // Phase A: an endpoint, a stream slot, a stream.
            let opened = tokio::select! {
                r = self.open(avoid, dir.is_done()) => r,
                _ = sleep_opt(&mut deadline) => Err((None, self.deadline_error())),
                _ = poll_fn(|cx| respond.poll_reset(cx)) => return Outcome::ClientGone,
            };
            let mut opened = match opened {
                Ok(o) => o,
                Err((index, e)) => {
                    if e.never_started() && !retried && index.is_some() && dir.can_replay() {
                        retried = true;
                        avoid = index;
                        continue;
                    }
                    reply_error(&mut respond, &e);
                    return Outcome::Failed(e);
                }
            };
            let ep = self.upstream.endpoints[opened.index].clone();
            let _in_flight = InFlight::new(&ep);
            let sent_at = Instant::now();

            // Phase B: response headers, while the request body flows.
            let mut header_timer: Option<Pin<Box<Sleep>>> = self
                .upstream
                .request_timeout
                .map(|t| Box::pin(tokio::time::sleep(t)));
            let mut req_broken = false;
            let got = poll_fn(|cx| {
                if respond.poll_reset(cx).is_ready() {
                    return Poll::Ready(Headers::ClientGone);
                }
                if !req_broken {
                    match dir.poll_forward(cx, &mut opened.send) {
                        Poll::Ready(Err(DirError::Src(_))) => {
                            return Poll::Ready(Headers::ClientGone)
                        }
                        Poll::Ready(Err(DirError::Dst(_))) => req_broken = true,
                        _ => {}
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
                            timeout: self.upstream.request_timeout.unwrap_or_default(),
                        }));
                    }
                }
                Poll::Pending
            })
            .await;
            let resp = match got {
                Headers::Response(Ok(resp)) => resp,
                Headers::Response(Err(e)) => {
                    let err = self.stream_error(&ep, &e, true);
                    if err.never_started() && !retried && dir.can_replay() {
                        tracing::debug!(upstream = %self.upstream.name, endpoint = %ep.address,
                            error = %e, "stream refused before it started; retrying elsewhere");
                        retried = true;
                        avoid = Some(opened.index);
                        dir.restart();
                        continue;
                    }
                    reply_error(&mut respond, &err);
                    return Outcome::Failed(err);
                }
                Headers::ClientGone => {
                    opened.send.send_reset(h2::Reason::CANCEL);
                    return Outcome::ClientGone;
                }
                Headers::Timeout(err) => {
                    opened.send.send_reset(h2::Reason::CANCEL);
                    reply_error(&mut respond, &err);
                    return Outcome::Failed(err);
                }
            };
            ep.latency.observe(sent_at.elapsed().as_nanos() as u64);
            dir.forget_replay();

            // Phase C: the response streams back while the request may still flow.
            let (mut head, body) = resp.into_parts();
            grpc::strip_hop_by_hop(&mut head.headers);
            let eos = body.is_end_stream();
            let Ok(mut client) = respond.send_response(Response::from_parts(head, ()), eos) else {
                opened.send.send_reset(h2::Reason::CANCEL);
                return Outcome::ClientGone;
            };
            if eos {
                return Outcome::Forwarded;
            }
            let mut rdir = Dir::new(body, false);
            let end = poll_fn(|cx| {
                if client.poll_reset(cx).is_ready() {
                    return Poll::Ready(Streaming::ClientGone);
                }
                if !req_broken && !dir.is_done() {
                    match dir.poll_forward(cx, &mut opened.send) {
                        Poll::Ready(Err(DirError::Src(_))) => {
                            return Poll::Ready(Streaming::ClientGone)
                        }
                        Poll::Ready(Err(DirError::Dst(_))) => req_broken = true,
                        _ => {}
                    }
                }
                match rdir.poll_forward(cx, &mut client) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Streaming::Done),
                    Poll::Ready(Err(DirError::Src(e))) => {
                        return Poll::Ready(Streaming::UpstreamFailed(e))
                    }
                    Poll::Ready(Err(DirError::Dst(_))) => {
                        return Poll::Ready(Streaming::ClientGone)
                    }
                    Poll::Pending => {}
                }
                if let Some(d) = deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Streaming::Deadline);
                    }
                }
                Poll::Pending
            })
            .await;
            return match end {
                Streaming::Done => Outcome::Forwarded,
                Streaming::ClientGone => {
                    opened.send.send_reset(h2::Reason::CANCEL);
                    Outcome::ClientGone
                }
                Streaming::Deadline => {
                    opened.send.send_reset(h2::Reason::CANCEL);
                    let err = self.deadline_error();
                    trailer_error(&mut client, &err);
                    Outcome::Failed(err)
                }
                Streaming::UpstreamFailed(e) => {
                    let err = self.stream_error(&ep, &e, false);
                    match e.reason() {
                        // A reset passes through as a reset with the same code, as a direct
                        // connection would have shown it.
                        Some(reason) if e.is_reset() => client.send_reset(reason),
                        _ => trailer_error(&mut client, &err),
                    }
                    Outcome::Failed(err)
                }
            };
        }
    }

    /// Picks an endpoint and opens a stream on it. On error, says which endpoint failed.
    async fn open(
        &self,
        avoid: Option<usize>,
        end_of_stream: bool,
    ) -> Result<Opened, (Option<usize>, ProxyError)> {
        let up = &self.upstream;
        let index = up
            .balancer
            .pick(&up.endpoints, avoid, &mut rand::rng())
            .ok_or_else(|| (None, ProxyError::NoHealthyEndpoint(up.name.to_string())))?;
        let ep = &up.endpoints[index];
        let fail = |e| (Some(index), e);
        let lease = ep.pool.acquire().await.map_err(|e| match e {
            AcquireError::Connect(reason) => {
                let (n, wait) = ep.connect_failed(up.backoff_max);
                crate::pool::log_failure(&up.name, &ep.address, n, wait, &reason);
                fail(ProxyError::Connect {
                    upstream: up.name.to_string(),
                    endpoint: ep.address.to_string(),
                    reason,
                })
            }
            AcquireError::Exhausted(reason) => fail(ProxyError::PoolExhausted {
                upstream: up.name.to_string(),
                endpoint: ep.address.to_string(),
                reason,
            }),
        })?;
        let mut sender = lease.sender();
        let not_started = |e: h2::Error| {
            fail(ProxyError::NotStarted {
                upstream: up.name.to_string(),
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

    /// Classifies an upstream stream error. `before_headers`: no response headers yet.
    fn stream_error(&self, ep: &Endpoint, e: &h2::Error, before_headers: bool) -> ProxyError {
        let upstream = self.upstream.name.to_string();
        let endpoint = ep.address.to_string();
        if e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM) && before_headers {
            return ProxyError::NotStarted {
                upstream,
                endpoint,
                reason: e.to_string(),
            };
        }
        if e.is_go_away()
            && e.is_remote()
            && before_headers
            && e.reason() == Some(h2::Reason::NO_ERROR)
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
}

async fn sleep_opt(s: &mut Option<Pin<Box<Sleep>>>) {
    match s {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}
