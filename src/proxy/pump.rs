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

use bytes::Bytes;
use h2::SendStream;
use http::HeaderMap;
use http_body::Body as _;

use crate::stack::{Body, BoxError};

/// Least send capacity asked for at a time.
const RESERVE: usize = 16 * 1024;

/// Most request bytes kept for a replay; a call that sent more is not retried.
const REPLAY_LIMIT: usize = 64 * 1024;

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
            if let Some(chunk) = &mut self.pending {
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
                        continue;
                    }
                }
                let n = cap.min(chunk.len());
                let part = chunk.split_to(n);
                if chunk.is_empty() {
                    self.pending = None;
                }
                dst.send_data(part, false).map_err(DirError::Dst)?;
                continue;
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
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        self.keep_for_replay(&data);
                        self.pending = Some(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            if let Some(r) = &mut self.replay {
                                r.trailers = Some(trailers.clone());
                            }
                            self.trailers = Some(trailers);
                            self.src_done = true;
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(DirError::Src(e))),
                None => self.src_done = true,
            }
        }
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
