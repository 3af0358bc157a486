//! One proxied call: open a stream on an upstream endpoint (retrying once elsewhere if it never
//! started), and wait for the response headers while pumping the request body. The response
//! goes back as a [`Response`] whose [`ForwardBody`] streams the upstream's frames and keeps
//! pumping the request, watching the deadline, until the response ends.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use h2::client::ResponseFuture;
use h2::RecvStream;
use http::request::Parts;
use tokio::time::{Instant, Sleep};

use super::forward_body::{stream_error, ForwardBody, InFlight};
use super::head::upstream_request;
use super::hold::{Opened, Unanswered};
use super::pump::Dir;
use crate::error::ProxyError;
use crate::grpc;
use crate::stack::{Body, Response};
use crate::upstream::endpoint::Endpoint;
use crate::upstream::pool::AcquireError;
use crate::upstream::{Members, Upstream};

/// A call being proxied.
pub struct Call {
    upstream: Arc<Upstream>,
    /// The group's members as the call started (a reload does not move it).
    members: Arc<Members>,
    parts: Parts,
    started: Instant,
    deadline: Option<Instant>,
    /// The client connection's early resets (absent for calls not from a client connection).
    client_resets: Option<crate::stack::ClientEarlyResets>,
}

enum Headers {
    Response(Result<http::Response<RecvStream>, h2::Error>),
    Timeout(ProxyError),
}

/// Where an attempt's stream went and when: the endpoint (and its index in the call's
/// members), with the stream counted in flight there for as long as it is open.
struct Sent {
    in_flight: InFlight,
    ep: Arc<Endpoint>,
    index: usize,
    at: Instant,
}

/// How one attempt (one upstream stream) ended.
enum Attempt {
    /// Response headers arrived: the call goes on with this response.
    Answered(Response),
    /// The upstream never processed the stream (REFUSED_STREAM, or a graceful GOAWAY that did
    /// not cover it): the endpoint at this index, and why.
    Refused(usize, ProxyError),
    /// Anything else: the call ends with this.
    Failed(ProxyError),
}

/// Most attempts a call makes after the upstream refused its stream (it also stops when
/// `queue_timeout` or its deadline runs out).
const MAX_REFUSALS: u32 = 32;

/// Retry bookkeeping of one call. A call that never reached an upstream (connect failed, no
/// stream slot) is retried once elsewhere. A stream the upstream refused was never processed:
/// the call tries another endpoint, and where it can only go back to the one that refused, it
/// first waits for a stream there to end — within the pool's `queue_timeout` and the call's
/// deadline, as a strict pool's queue waits for a slot.
#[derive(Default)]
struct Retry {
    /// The one retry elsewhere has been used.
    retried: bool,
    /// The first failure, reported when nowhere is left to go.
    first_error: Option<ProxyError>,
    /// The endpoint the next pick avoids, when another is in rotation.
    avoid: Option<usize>,
    /// The endpoint that refused last; a new stream there waits for one of its streams to end.
    refused: Option<usize>,
    refusals: u32,
    /// Why the last refusal came.
    last_refusal: String,
    /// How long a refused call may keep trying: `queue_timeout` after the first refusal, or the
    /// deadline if sooner.
    until: Option<Instant>,
}

impl Retry {
    /// Records a refusal by endpoint `index`; false when the call has tried long enough.
    fn refused(&mut self, index: usize, call: &Call, e: &ProxyError) -> bool {
        if self.refusals == 0 {
            // Outlier detection counts a refusal once per call: a busy endpoint that refuses
            // some streams while it serves others is not ejected by one call's retries.
            call.failed(&call.members.endpoints[index]);
        }
        self.refusals += 1;
        let ep = &call.members.endpoints[index];
        let until = *self.until.get_or_insert_with(|| {
            let queued = Instant::now() + ep.pool.queue_timeout();
            call.deadline.map_or(queued, |d| d.min(queued))
        });
        if self.refusals > MAX_REFUSALS || Instant::now() >= until {
            return false;
        }
        self.last_refusal = match e {
            ProxyError::NotStarted { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        self.avoid = Some(index);
        self.refused = Some(index);
        true
    }

    /// Until when a call going back to the endpoint that refused it waits for one of that
    /// endpoint's streams to end: [`REFUSED_PAUSE`] doubled per refusal (up to 32 times), or
    /// `until` if sooner.
    fn pause_until(&self, until: Instant) -> Instant {
        let pause = REFUSED_PAUSE * (1 << self.refusals.min(5));
        until.min(Instant::now() + pause)
    }

    /// The error of a call whose stream endpoint `ep` of `upstream` kept refusing, with no slot
    /// there before its time to try ran out.
    fn gave_up(&self, upstream: &str, ep: &Endpoint) -> ProxyError {
        ProxyError::NotStarted {
            upstream: upstream.to_string(),
            endpoint: ep.address.to_string(),
            reason: format!(
                "refused the stream {} times, no slot within queue_timeout (last: {})",
                self.refusals, self.last_refusal
            ),
        }
    }

    /// The error to report: when the last one only says no endpoint was left, the first
    /// failure says more.
    fn report(self, e: ProxyError) -> ProxyError {
        match (&e, self.first_error) {
            (ProxyError::NoHealthyEndpoint { .. }, Some(first)) => first,
            _ => e,
        }
    }
}

impl Call {
    /// A call for `parts` (hop-by-hop headers already stripped) to `upstream`.
    pub fn new(upstream: Arc<Upstream>, parts: Parts) -> Call {
        let started = Instant::now();
        let received = parts
            .extensions
            .get::<crate::stack::Received>()
            .map_or(started, |r| Instant::from_std(r.0));
        let deadline = parts
            .headers
            .get(grpc::GRPC_TIMEOUT)
            .and_then(|v| grpc::parse_timeout(v.as_bytes()))
            .map(|d| received + d);
        Call {
            members: upstream.members(),
            upstream,
            client_resets: parts.extensions.get().cloned(),
            parts,
            // What the client waited counts from when the server received the call.
            started: received,
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
        let mut retry = Retry::default();
        loop {
            // Phase A: an endpoint, a stream slot, a stream.
            let opened = tokio::select! {
                r = self.open(&retry, dir.is_done()) => r,
                _ = sleep_opt(&mut deadline) => Err((None, self.deadline_error())),
            };
            let opened = match opened {
                Ok(o) => o,
                Err((index, e)) => {
                    if e.never_started() && !retry.retried && index.is_some() && dir.can_replay() {
                        retry.retried = true;
                        retry.avoid = index;
                        self.refresh_members(&mut retry);
                        retry.first_error = Some(e);
                        continue;
                    }
                    return Err(retry.report(e));
                }
            };
            // Phase B: response headers, while the request body flows.
            match self.await_headers(opened, &mut dir, &mut deadline).await {
                Attempt::Answered(resp) => return Ok(resp),
                Attempt::Failed(e) => return Err(e),
                Attempt::Refused(index, e) => {
                    if !retry.refused(index, &self, &e) || !dir.can_replay() {
                        return Err(e);
                    }
                    tracing::debug!(upstream = %self.upstream.name, error = %e,
                        "stream refused before it started; waiting for a slot");
                    self.refresh_members(&mut retry);
                    dir.restart();
                }
            }
        }
    }

    /// Phase B of one attempt: waits for the response headers of the stream `opened` while the
    /// request body flows, and turns them into the call's response.
    async fn await_headers(
        &self,
        opened: Opened,
        dir: &mut Dir,
        deadline: &mut Option<Pin<Box<Sleep>>>,
    ) -> Attempt {
        let ep = self.members.endpoints[opened.index].clone();
        let sent = Sent {
            in_flight: InFlight::new(&ep),
            ep,
            index: opened.index,
            at: Instant::now(),
        };
        // Until the backend answers, dropping the call hands the stream to `hold`.
        let mut unanswered = Unanswered::new(opened, sent.at, self.client_resets.as_ref());
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
            self.poll_headers(cx, &mut opened.response, deadline, &mut header_timer)
        })
        .await;
        let resp = match got {
            Headers::Response(Ok(resp)) => resp,
            Headers::Response(Err(e)) => {
                drop(unanswered.settle()); // The stream is over already.
                return self.lost(&sent, &e);
            }
            Headers::Timeout(err) => {
                if let ProxyError::RequestTimeout { .. } = err {
                    self.failed(&sent.ep);
                }
                // Reset as a client's cancel is: at once, or held while a flood of early
                // resets (a client sending calls with tiny deadlines) would trip the backend.
                drop(unanswered);
                return Attempt::Failed(err);
            }
        };
        let opened = unanswered.settle();
        Attempt::Answered(self.answered(resp, sent, opened, dir, req_broken, deadline))
    }

    /// What ends phase B, polled in this order: the response headers on `response`, the call's
    /// `deadline`, the upstream's `request_timeout` (`header_timer`). `Pending` (with `cx`
    /// registered on all three) while none has come.
    fn poll_headers(
        &self,
        cx: &mut Context<'_>,
        response: &mut ResponseFuture,
        deadline: &mut Option<Pin<Box<Sleep>>>,
        header_timer: &mut Option<Pin<Box<Sleep>>>,
    ) -> Poll<Headers> {
        if let Poll::Ready(r) = response.poll_unpin(cx) {
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
    }

    /// Phase B ended with the stream `sent` failing (`e`) before its response headers: refused
    /// when the upstream never processed it (the call may try again), else failed, counted
    /// against the endpoint.
    fn lost(&self, sent: &Sent, e: &h2::Error) -> Attempt {
        let err = stream_error(&self.upstream.name, &sent.ep, e, true);
        if err.never_started() {
            return Attempt::Refused(sent.index, err); // Counted by `Retry::refused`.
        }
        self.failed(&sent.ep);
        Attempt::Failed(err)
    }

    /// Phase B's end: the response headers `resp` of the stream `sent` (`opened`, settled) came.
    /// Records the endpoint's latency, drops the request's replay buffer, and makes the call's
    /// response: trailers-only, or with a [`ForwardBody`] that takes over the request (`dir`,
    /// `req_broken`), the `deadline`, the stream slot and the in-flight count.
    fn answered(
        &self,
        resp: http::Response<RecvStream>,
        sent: Sent,
        opened: Opened,
        dir: &mut Dir,
        req_broken: bool,
        deadline: &mut Option<Pin<Box<Sleep>>>,
    ) -> Response {
        let ep = sent.ep;
        ep.latency.observe(sent.at.elapsed().as_nanos() as u64);
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
                request: std::mem::replace(dir, Dir::new(Body::empty(), false)),
                request_sink: opened.send,
                request_broken: req_broken,
                deadline: deadline.take(),
                started: self.started,
                upstream: self.upstream.name.clone(),
                endpoint: ep,
                outlier: self
                    .members
                    .outlier
                    .clone()
                    .map(|o| (o, self.members.clone())),
                _lease: opened.lease,
                _in_flight: sent.in_flight,
            })
        };
        let mut resp = Response::from_parts(head, body);
        resp.extensions_mut()
            .insert(crate::stack::UpstreamEndpoint(ep_address));
        resp.extensions_mut()
            .insert(crate::stack::UpstreamGroup(self.upstream.name.clone()));
        resp
    }

    /// Picks an endpoint and opens a stream on it. On error, says which endpoint failed.
    async fn open(
        &self,
        retry: &Retry,
        end_of_stream: bool,
    ) -> Result<Opened, (Option<usize>, ProxyError)> {
        let up = &self.members;
        let name = &self.upstream.name;
        let index = up
            .balancer
            .pick(&up.endpoints, retry.avoid, &mut rand::rng())
            .ok_or_else(|| (None, self.no_endpoint()))?;
        let ep = &up.endpoints[index];
        let fail = |e| (Some(index), e);
        if retry.refused == Some(index) {
            // Back to the endpoint that refused the stream: wait for one of its streams to
            // end (or a moment, when it had none other open) before trying it again.
            let until = retry.until.unwrap_or_else(Instant::now);
            if !ep.pool.wait_for_release(retry.pause_until(until)).await && Instant::now() >= until
            {
                return Err(fail(retry.gave_up(name, ep)));
            }
        }
        let lease = ep
            .pool
            .acquire()
            .await
            .map_err(|e| fail(self.acquire_error(ep, e)))?;
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
        let remaining = self.remaining().map_err(|e| (None, e))?;
        let req = upstream_request(&self.parts, &ep.address, remaining);
        let (response, send) = sender
            .send_request(req, end_of_stream)
            .map_err(not_started)?;
        Ok(Opened {
            index,
            lease,
            response,
            send,
        })
    }

    /// The call's error when endpoint `ep` had no stream slot for it (`e`). A failed connect is
    /// also counted (and logged) against the endpoint's reachability and outlier detection.
    fn acquire_error(&self, ep: &Arc<Endpoint>, e: AcquireError) -> ProxyError {
        let name = &self.upstream.name;
        match e {
            AcquireError::Connect(reason) => {
                let (n, wait) = ep.reach.failed(self.members.backoff_max, &reason);
                crate::upstream::pool::log_failure(name, &ep.address, n, wait, &reason);
                self.failed(ep);
                ProxyError::Connect {
                    upstream: name.to_string(),
                    endpoint: ep.address.to_string(),
                    reason,
                }
            }
            AcquireError::Retired => ProxyError::NotStarted {
                upstream: name.to_string(),
                endpoint: ep.address.to_string(),
                reason: "the endpoint left the group".into(),
            },
            AcquireError::Exhausted(reason) => ProxyError::PoolExhausted {
                upstream: name.to_string(),
                endpoint: ep.address.to_string(),
                reason,
            },
        }
    }

    /// The time left before the call's deadline, for the upstream's `grpc-timeout` (`None`: no
    /// deadline); the deadline error once none is left.
    fn remaining(&self) -> Result<Option<Duration>, ProxyError> {
        match self.deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Ok(Some(r)),
                _ => Err(self.deadline_error()),
            },
            None => Ok(None),
        }
    }
}

/// The first pause before a refused call goes back to the endpoint that refused it, when no
/// stream ends there sooner; doubled per refusal, up to 32 times this.
const REFUSED_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

impl Call {
    /// Before a retry: when a reload changed the group since the call started, the retry
    /// picks among the new members (the endpoint to avoid may have left; indices changed).
    fn refresh_members(&mut self, retry: &mut Retry) {
        let now = self.upstream.members();
        if !Arc::ptr_eq(&now, &self.members) {
            self.members = now;
            retry.avoid = None;
            retry.refused = None;
        }
    }

    /// The error of a call that found no endpoint in rotation, saying why each is out.
    fn no_endpoint(&self) -> ProxyError {
        let why: Vec<String> = self
            .members
            .endpoints
            .iter()
            .filter_map(|e| e.out_of_rotation())
            .collect();
        ProxyError::NoHealthyEndpoint {
            upstream: self.upstream.name.to_string(),
            why: if why.is_empty() {
                "the group has no endpoints".into()
            } else {
                why.join("; ")
            },
        }
    }

    /// Counts a failed call against `ep` for outlier detection.
    fn failed(&self, ep: &Arc<Endpoint>) {
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
