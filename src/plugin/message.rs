//! The message hooks in the body of a call: [`MessageBody`] splits a request or response body
//! into whole gRPC messages, one at a time, runs the plugin's `on-request-message` or
//! `on-response-message` on each and passes on what it answers; [`Verdict`] carries a mid-stream
//! rejection to the other side of the call.
//!
//! Streaming stays streaming: the body holds at most one message (up to the plugin's
//! `max_message_size`) and what arrived after it in the same DATA frame, and it reads from the
//! peer only when the one downstream reads from it, so HTTP/2 flow control pushes back on both
//! sides as without a plugin. Boundaries and order are kept: each message leaves as it came or
//! as its whole replacement, before the next one is read.
//!
//! A rejection of a request message ends the request body with an error, which makes the
//! forwarder reset the upstream stream (CANCEL), and decides the [`Verdict`]: the client gets the
//! plugin's status, trailers-only if the response has not started, else in the trailers that
//! end the response. A rejection of a response message drops the upstream side (resetting it)
//! and ends the response with the status in its trailers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use super::bindings::{Message, MessageAction};
use super::codec::{self, Encoding, Unreadable, PREFIX};
use super::compat::Direction;
use super::host::CallCtx;
use super::instance::Version;
use super::{convert, Failure, Plugin};
use crate::config::{ByteSize, MessagePolicy};
use crate::grpc::Code;
use crate::stack::{status_of, Body, BoxError, Rejected};

/// A call's mid-stream rejection, decided on one side and answered on the other.
#[derive(Default)]
pub struct Verdict {
    decided: AtomicBool,
    rejected: Mutex<Option<Rejected>>,
    waker: AtomicWaker,
}

impl Verdict {
    /// Ends the call with `r` (the first decision holds) and wakes whoever answers the client.
    pub fn decide(&self, r: Rejected) {
        let mut slot = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if self.decided.load(Ordering::Acquire) {
            return;
        }
        *slot = Some(r);
        self.decided.store(true, Ordering::Release);
        drop(slot);
        self.waker.wake();
    }

    /// The rejection, once decided: taken by the first to ask (it answers the client).
    pub fn take(&self) -> Option<Rejected> {
        if !self.decided.load(Ordering::Acquire) {
            return None;
        }
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Like [`Verdict::take`], waking the task when it is decided later.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Rejected> {
        self.waker.register(cx.waker());
        match self.take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

/// What the message hooks of one direction of one call need.
pub struct MessageHook {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// The version the call started on.
    pub version: Arc<Version>,
    /// The call's properties.
    pub ctx: Arc<CallCtx>,
    /// The call's id, as its header hooks see it.
    pub call_id: u64,
    /// The gRPC method path.
    pub method: String,
    /// Which way the messages go.
    pub dir: Direction,
    /// How this direction's compressed messages are encoded.
    pub encoding: Encoding,
}

type Pending = Pin<Box<dyn Future<Output = Result<Bytes, Rejected>> + Send>>;

impl MessageHook {
    fn name(&self) -> &'static str {
        match self.dir {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }

    /// Shows one whole message (`frame`: prefix and payload) to the plugin; what to send on.
    async fn run(
        self: Arc<Self>,
        index: u64,
        compressed: bool,
        frame: Bytes,
    ) -> Result<Bytes, Rejected> {
        let max = self.plugin.cfg.max_message();
        let data = if compressed {
            let (enc, packed) = (self.encoding.clone(), frame.slice(PREFIX..));
            let unpacked = super::offload::blocking(move || codec::decompress(&enc, &packed, max));
            match unpacked.await {
                Ok(Ok(d)) => d,
                Ok(Err(why)) => return self.unreadable(index, &why).map(|()| frame),
                Err(f) => return self.failed(f, frame),
            }
        } else {
            frame[PREFIX..].to_vec()
        };
        let message = Message {
            call_id: self.call_id,
            method: self.method.clone(),
            index,
            compressed,
            data,
        };
        let started = Instant::now();
        let answer = (self.version)
            .on_message(self.ctx.clone(), self.dir, message)
            .await;
        let stats = &self.plugin.stats;
        stats.observe(started.elapsed());
        stats.calls[2 + self.dir as usize].fetch_add(1, Ordering::Relaxed);
        let failure = match answer {
            Ok(MessageAction::Continue) => return Ok(frame),
            Ok(MessageAction::Replace(data)) if data.len() <= max => {
                stats.replacements.fetch_add(1, Ordering::Relaxed);
                if !compressed {
                    return Ok(codec::frame(false, &data));
                }
                let enc = self.encoding.clone();
                return match super::offload::blocking(move || codec::compress(&enc, &data)).await {
                    Ok(packed) => Ok(codec::frame(true, &packed)),
                    Err(f) => self.failed(f, frame),
                };
            }
            Ok(MessageAction::Replace(data)) => Failure::Invalid(format!(
                "a replacement message of {} bytes (max_message_size is {max})",
                data.len()
            )),
            Ok(MessageAction::Reject(r)) => match convert::rejection(&r) {
                Ok(rejected) => {
                    stats.rejections.fetch_add(1, Ordering::Relaxed);
                    return Err(rejected.by_plugin(&self.plugin.shared.name));
                }
                Err(e) => Failure::Invalid(e),
            },
            Err(f) => f,
        };
        self.failed(failure, frame)
    }

    /// After a failure: the call's refusal (`on_error: deny`), or the message as it came.
    fn failed(&self, failure: Failure, frame: Bytes) -> Result<Bytes, Rejected> {
        match self.plugin.failed(&failure) {
            Some(denied) => Err(denied),
            None => Ok(frame),
        }
    }

    /// A message the plugin cannot be shown: `Ok` passes it on untouched (`pass`), `Err` ends
    /// the call (`reject`).
    fn unreadable(&self, index: u64, why: &Unreadable) -> Result<(), Rejected> {
        let cfg = &self.plugin.cfg;
        let (policy, code, text, reason) = match why {
            Unreadable::TooLarge => (
                cfg.on_oversize_message,
                Code::ResourceExhausted,
                format!(
                    "is over max_message_size {}",
                    ByteSize(cfg.max_message() as u64)
                ),
                0,
            ),
            // gRPC servers answer this protocol error with INTERNAL.
            Unreadable::Encoding if self.encoding == Encoding::Identity => (
                cfg.on_unknown_encoding,
                Code::Internal,
                "has the compressed flag but the call has no grpc-encoding".to_string(),
                1,
            ),
            Unreadable::Encoding => (
                cfg.on_unknown_encoding,
                Code::Unimplemented,
                format!(
                    "is compressed with {:?}, which it cannot read",
                    self.encoding.name()
                ),
                1,
            ),
            Unreadable::Corrupt(e) => (
                cfg.on_unknown_encoding,
                Code::Internal,
                format!("could not be decompressed ({e})"),
                1,
            ),
        };
        self.plugin.stats.unread[reason].fetch_add(1, Ordering::Relaxed);
        match policy {
            MessagePolicy::Pass => Ok(()),
            MessagePolicy::Reject => Err(Rejected::new(
                code,
                format!(
                    "{} message {index} {text} (plugin {})",
                    self.name(),
                    cfg.name
                ),
            )
            .by_plugin(&self.plugin.shared.name)),
        }
    }
}

/// A body whose messages go through a plugin's message hook (`hook`), or, on the response side
/// of a call whose request messages do, a body that only watches for the [`Verdict`].
pub struct MessageBody {
    inner: Body,
    hook: Option<Arc<MessageHook>>,
    verdict: Arc<Verdict>,
    /// Bytes read but not yet sent on: the start of the next message.
    buf: BytesMut,
    /// Bytes of a message passed on untouched that are still to come.
    passing: usize,
    index: u64,
    pending: Option<Pending>,
    /// Messages passed on and not yet sent: consecutive ones leave as one frame of up to
    /// [`BATCH`] bytes instead of a frame each (fewer polls through the layers downstream).
    out: BytesMut,
    /// A refusal held until `out` has gone.
    refused: Option<Rejected>,
    /// The bytes of `buf` counted in the plugin's `buffered`.
    held: usize,
    trailers: Option<HeaderMap>,
    inner_done: bool,
    done: bool,
}

/// What `poll_frame` answers.
type PollFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// The most bytes of passed-on messages gathered into one frame (the pump's own coalescing).
const BATCH: usize = 16 << 10;

impl MessageBody {
    /// `inner` through `hook` (if any); a rejection decides `verdict`.
    pub fn new(inner: Body, hook: Option<Arc<MessageHook>>, verdict: Arc<Verdict>) -> MessageBody {
        MessageBody {
            inner,
            hook,
            verdict,
            buf: BytesMut::new(),
            passing: 0,
            index: 0,
            pending: None,
            out: BytesMut::new(),
            refused: None,
            held: 0,
            trailers: None,
            inner_done: false,
            done: false,
        }
    }

    fn is_request(&self) -> bool {
        matches!(&self.hook, Some(h) if h.dir == Direction::Request)
    }
}

/// What to do next with the bytes in hand.
enum Step {
    /// Send these bytes on.
    Send(Bytes),
    /// Show a message to the plugin.
    Run(Pending),
}

impl MessageBody {
    /// The next step the buffered bytes allow, if any.
    fn step(&mut self) -> Option<Result<Step, Rejected>> {
        let hook = self.hook.clone()?;
        if self.passing > 0 {
            if self.buf.is_empty() {
                return None;
            }
            let n = self.passing.min(self.buf.len());
            self.passing -= n;
            return Some(Ok(Step::Send(self.buf.split_to(n).freeze())));
        }
        let (compressed, len) = match codec::header(&self.buf)? {
            Ok(h) => h,
            Err(flag) => {
                let msg = format!(
                    "{} message {} has compressed-flag {flag} (gRPC allows 0 or 1)",
                    hook.name(),
                    self.index
                );
                let refused = Rejected::new(Code::Internal, msg);
                return Some(Err(refused.by_plugin(&hook.plugin.shared.name)));
            }
        };
        let index = self.index;
        if len > hook.plugin.cfg.max_message() {
            self.index += 1;
            if let Err(r) = hook.unreadable(index, &Unreadable::TooLarge) {
                return Some(Err(r));
            }
            self.passing = PREFIX + len;
            return self.step();
        }
        if self.buf.len() < PREFIX + len {
            // Not reserved up front from the declared length: the buffer grows with the bytes
            // that actually arrive, so a peer cannot make the gateway allocate by promising.
            return None;
        }
        self.index += 1;
        let frame = self.buf.split_to(PREFIX + len).freeze();
        Some(Ok(Step::Run(Box::pin(hook.run(index, compressed, frame)))))
    }

    /// Ends this side with the rejection `r`: a request body fails (the forwarder resets the
    /// upstream stream) and leaves the status to the response side; a response body drops the
    /// upstream side and ends with the status in its trailers.
    fn reject(&mut self, r: Rejected) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.pending = None;
        self.inner = Body::empty();
        if self.is_request() {
            self.verdict.decide(r);
            return Poll::Ready(Some(
                Err("a request message was refused by a plugin".into()),
            ));
        }
        let status = status_of(&BoxError::from(r));
        Poll::Ready(Some(Ok(Frame::trailers(status.to_trailers()))))
    }

    /// Takes one frame from the inner body into the buffer (data) or `trailers`; a data frame
    /// that needs no look (no hook, or the middle of a message passed untouched) is returned.
    /// Counts what `buf` holds now in the plugin's `buffered`; an error when it grew past the
    /// plugin's `message_buffer_limit`.
    fn account(&mut self) -> Result<(), Rejected> {
        let (Some(hook), now) = (&self.hook, self.buf.len()) else {
            return Ok(());
        };
        let total = &hook.plugin.stats.buffered;
        if now <= self.held {
            total.fetch_sub(self.held - now, Ordering::Relaxed);
            self.held = now;
            return Ok(());
        }
        let before = total.fetch_add(now - self.held, Ordering::Relaxed);
        let limit = hook.plugin.cfg.message_buffer();
        let over = before + now - self.held > limit;
        self.held = now;
        if !over {
            return Ok(());
        }
        hook.plugin.stats.unread[2].fetch_add(1, Ordering::Relaxed);
        let msg = format!(
            "plugin {}'s message buffers are full (message_buffer_limit {})",
            hook.plugin.cfg.name,
            ByteSize(limit as u64)
        );
        Err(Rejected::new(Code::ResourceExhausted, msg).by_plugin(&hook.plugin.shared.name))
    }

    fn take(&mut self, frame: Frame<Bytes>) -> Option<Bytes> {
        match frame.into_data() {
            Ok(d) if self.hook.is_none() => Some(d),
            Ok(mut d) if self.passing > 0 && self.buf.is_empty() => {
                let n = self.passing.min(d.len());
                self.passing -= n;
                let now = d.split_to(n);
                self.buf.extend_from_slice(&d);
                Some(now)
            }
            Ok(d) => {
                self.buf.extend_from_slice(&d);
                None
            }
            Err(f) => {
                self.trailers = f.into_trailers().ok();
                None
            }
        }
    }

    /// Polls the running hook: `None` when its message joined `out` and there is room for more,
    /// else what `poll_frame` returns (the gathered messages, a refusal, or `Pending`).
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Option<PollFrame> {
        let p = self.pending.as_mut()?;
        let Poll::Ready(out) = p.as_mut().poll(cx) else {
            return Some(self.flush_or_pending());
        };
        self.pending = None;
        match out {
            // A large message alone goes as it is, uncopied.
            Ok(bytes) if self.out.is_empty() && bytes.len() >= BATCH => {
                return Some(Poll::Ready(Some(Ok(Frame::data(bytes)))));
            }
            Ok(bytes) => self.out.extend_from_slice(&bytes),
            Err(r) if self.out.is_empty() => return Some(self.reject(r)),
            Err(r) => {
                self.refused = Some(r);
                return Some(self.flush_or_pending());
            }
        }
        (self.out.len() >= BATCH).then(|| self.flush_or_pending())
    }

    /// The gathered messages as one frame; `Pending` when there are none (a hook is running).
    fn flush_or_pending(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.out.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(self.out.split().freeze()))))
    }

    /// The end of the inner body: what is left of a message cut short goes on untouched (its
    /// receiver reports it), then the trailers.
    fn finish(&mut self) -> Option<Frame<Bytes>> {
        if !self.buf.is_empty() {
            return Some(Frame::data(self.buf.split().freeze()));
        }
        self.done = true;
        self.trailers.take().map(Frame::trailers)
    }
}

impl Drop for MessageBody {
    fn drop(&mut self) {
        if let Some(hook) = &self.hook {
            hook.plugin
                .stats
                .buffered
                .fetch_sub(self.held, Ordering::Relaxed);
        }
    }
}

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(r) = this.refused.take() {
                return this.reject(r);
            }
            if this.held > this.buf.len() {
                let _ = this.account();
            }
            if !this.is_request() {
                if let Poll::Ready(r) = this.verdict.poll_take(cx) {
                    return this.reject(r);
                }
            }
            if this.pending.is_some() {
                if let Some(ready) = this.poll_pending(cx) {
                    return ready;
                }
            }
            match this.step() {
                Some(Ok(Step::Send(b))) => this.out.extend_from_slice(&b),
                Some(Ok(Step::Run(p))) => this.pending = Some(p),
                Some(Err(r)) if this.out.is_empty() => return this.reject(r),
                Some(Err(r)) => {
                    this.refused = Some(r);
                    return this.flush_or_pending();
                }
                None if !this.out.is_empty() => return this.flush_or_pending(),
                None => {}
            }
            if this.pending.is_some() || !this.out.is_empty() {
                continue;
            }
            if this.inner_done {
                return Poll::Ready(this.finish().map(Ok));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.inner_done = true,
                Some(Ok(frame)) => {
                    let now = this.take(frame);
                    if let Err(r) = this.account() {
                        return this.reject(r);
                    }
                    if let Some(now) = now {
                        return Poll::Ready(Some(Ok(Frame::data(now))));
                    }
                }
                Some(Err(e)) => {
                    // The upstream stream failed because a request message was refused: the
                    // refusal is the answer.
                    if !this.is_request() {
                        if let Some(r) = this.verdict.take() {
                            return this.reject(r);
                        }
                    }
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
