//! Moves one direction of a stream: DATA frames and trailers from a [`Body`] (an h2 stream, or
//! what a stage made of one) to an h2 `SendStream`, as they arrive, without decoding gRPC
//! messages. Sending waits for the peer's
//! flow-control capacity, so a slow reader slows the writer instead of filling memory.
//!
//! The request direction may keep a small replay buffer so that a call refused by an upstream
//! before it started (REFUSED_STREAM, GOAWAY) can be replayed on another endpoint.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::SendStream;
use http::HeaderMap;
use http_body::{Body as _, Frame};

use crate::stack::{Body, BoxError};

/// Least send capacity asked for at a time.
const RESERVE: usize = 16 * 1024;

/// Most request bytes kept for a replay; a call that sent more is not retried.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Chunks that are already waiting are joined into one DATA frame of up to this many bytes.
/// h2 writes every DATA frame over 256 bytes with its own `writev`, so forwarding a run of
/// small frames one by one cost a system call each (a server stream of 100 B messages made
/// one `writev` per ~400 bytes). 16 KiB is the default largest frame, so joined chunks do not
/// split into more frames than they would anyway.
const COALESCE: usize = 16 * 1024;

/// Which side failed.
#[derive(Debug)]
pub enum DirError {
    /// Reading from the source failed (its peer reset the stream, the connection broke, or the
    /// gateway ended the call: a deadline, say).
    Src(BoxError),
    /// Writing to the destination failed.
    Dst(h2::Error),
}

/// One direction of a proxied stream.
pub struct Dir {
    src: Body,
    /// Chunks to send before reading more from `src` (a replay after a retry).
    queue: VecDeque<Bytes>,
    pending: Option<Bytes>,
    /// `src` has ended; `trailers` holds what ended it (`None` after they were sent).
    src_done: bool,
    trailers: Option<HeaderMap>,
    /// The end of stream has been forwarded.
    done: bool,
    /// The stream ended with its HEADERS frame (no body at all).
    ended_with_headers: bool,
    /// A read error met while joining chunks, reported once they are sent.
    failed: Option<BoxError>,
    replay: Option<Replay>,
}

struct Replay {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
}

impl Dir {
    /// A direction reading from `src`; `replayable` keeps the first bytes for a retry.
    pub fn new(src: Body, replayable: bool) -> Dir {
        let done = src.is_end_stream();
        Dir {
            src,
            queue: VecDeque::new(),
            pending: None,
            src_done: done,
            trailers: None,
            done,
            ended_with_headers: done,
            failed: None,
            replay: replayable.then(|| Replay {
                chunks: Vec::new(),
                len: 0,
                trailers: None,
            }),
        }
    }

    /// True once the end of stream has been forwarded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True when everything forwarded so far is still held for a replay.
    pub fn can_replay(&self) -> bool {
        self.replay.is_some()
    }

    /// Stops keeping bytes for a replay (the upstream has answered).
    pub fn forget_replay(&mut self) {
        self.replay = None;
    }

    /// Rewinds to the start for a new destination: queued replay chunks go first.
    pub fn restart(&mut self) {
        let Some(r) = &self.replay else { return };
        self.queue = r.chunks.iter().cloned().collect();
        self.pending = None;
        self.trailers = r.trailers.clone();
        self.done = self.ended_with_headers;
    }

    /// Forwards as much as flow control allows; `Ready(Ok)` once the end of stream is sent.
    pub fn poll_forward(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut SendStream<Bytes>,
    ) -> Poll<Result<(), DirError>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.pending.is_none() {
                self.pending = self.queue.pop_front();
            }
            if self.pending.is_some() {
                ready!(self.poll_send_pending(cx, dst))?;
                continue;
            }
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Err(DirError::Src(e)));
            }
            if self.src_done {
                match self.trailers.take() {
                    Some(t) => dst.send_trailers(t).map_err(DirError::Dst)?,
                    None => dst.send_data(Bytes::new(), true).map_err(DirError::Dst)?,
                }
                self.done = true;
                continue;
            }
            match ready!(Pin::new(&mut self.src).poll_frame(cx)) {
                Some(Ok(frame)) => self.take_frame(cx, frame),
                Some(Err(e)) => return Poll::Ready(Err(DirError::Src(e))),
                None => self.src_done = true,
            }
        }
    }

    /// Sends as much of the pending chunk as `dst`'s flow-control capacity allows, waiting
    /// (`Pending`) while it has none. `Ready(Ok)` once some went out or the capacity granted was
    /// none after all (the caller goes on); the chunk stays pending until all of it has gone.
    fn poll_send_pending(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut SendStream<Bytes>,
    ) -> Poll<Result<(), DirError>> {
        let Some(chunk) = &mut self.pending else {
            return Poll::Ready(Ok(()));
        };
        // Ask for capacity only when what is already assigned does not cover the
        // chunk, and then for at least RESERVE bytes, so a run of small frames takes
        // one reservation instead of one each (every h2 call takes its lock).
        let mut cap = dst.capacity();
        if cap < chunk.len() {
            dst.reserve_capacity(chunk.len().max(RESERVE));
            cap = dst.capacity();
        }
        if cap == 0 {
            match ready!(dst.poll_capacity(cx)) {
                Some(Ok(n)) => cap = n,
                Some(Err(e)) => return Poll::Ready(Err(DirError::Dst(e))),
                None => {
                    return Poll::Ready(Err(DirError::Dst(h2::Error::from(
                        h2::Reason::STREAM_CLOSED,
                    ))))
                }
            }
            if cap == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = cap.min(chunk.len());
        let part = chunk.split_to(n);
        if chunk.is_empty() {
            self.pending = None;
        }
        dst.send_data(part, false).map_err(DirError::Dst)?;
        Poll::Ready(Ok(()))
    }

    /// A frame read from `src`: data (unless empty) is kept for a replay and becomes the pending
    /// chunk, small data joined with what `src` already holds; trailers end the stream.
    fn take_frame(&mut self, cx: &mut Context<'_>, frame: Frame<Bytes>) {
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return;
                }
                self.keep_for_replay(&data);
                self.pending = Some(if data.len() < COALESCE {
                    self.join_waiting(cx, data)
                } else {
                    data
                });
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    self.end_with(trailers);
                }
            }
        }
    }

    /// Appends to `first` the data chunks `src` already holds, up to [`COALESCE`] bytes in all,
    /// and notes the end of the stream if it comes too. Stops at the first chunk that does not
    /// fit or is not there yet (then `src` has registered the waker, which is harmless: the
    /// joined chunk is sent before `src` is polled again). A read error is left for the next
    /// poll, after what was joined is sent.
    fn join_waiting(&mut self, cx: &mut Context<'_>, first: Bytes) -> Bytes {
        let mut joined: Option<BytesMut> = None;
        let mut len = first.len();
        loop {
            if self.src_done {
                break;
            }
            let next = match Pin::new(&mut self.src).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    self.src_done = true;
                    break;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed = Some(e);
                    break;
                }
                Poll::Pending => break,
            };
            let data = match next.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.end_with(trailers);
                    }
                    continue;
                }
            };
            self.keep_for_replay(&data);
            if len + data.len() > COALESCE {
                self.queue.push_back(data);
                break;
            }
            len += data.len();
            joined
                .get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(COALESCE);
                    b.extend_from_slice(&first);
                    b
                })
                .extend_from_slice(&data);
        }
        joined.map_or(first, BytesMut::freeze)
    }

    /// `src` ended with `trailers`.
    fn end_with(&mut self, trailers: HeaderMap) {
        if let Some(r) = &mut self.replay {
            r.trailers = Some(trailers.clone());
        }
        self.trailers = Some(trailers);
        self.src_done = true;
    }

    fn keep_for_replay(&mut self, data: &Bytes) {
        if let Some(r) = &mut self.replay {
            r.len += data.len();
            if r.len > REPLAY_LIMIT {
                self.replay = None;
            } else {
                r.chunks.push(data.clone());
            }
        }
    }
}
