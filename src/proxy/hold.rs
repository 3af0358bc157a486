//! Upstream streams whose call ended before the backend answered, held briefly before they are
//! reset.
//!
//! A client that opens a stream and resets it at once (the 2023 "rapid reset" pattern, or just an
//! impatient client) would otherwise make the gateway send the backend HEADERS and RST_STREAM
//! for the same stream back to back, often in one write. The backend's HTTP/2 stack counts
//! streams reset before its application took them (h2 and hyper allow 20 at once) and answers
//! more with GOAWAY ENHANCE_YOUR_CALM, which fails every other client's call on that shared
//! upstream connection. So a stream dropped within [`HOLD`] of opening it and still unanswered
//! is kept open until the backend answers it (it has taken the stream by then) or [`HOLD`] has
//! passed since it opened, then reset. At most [`MAX_HELD`] are held per process; past that,
//! streams are reset at once as before.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::call::Opened;

/// How long after opening an unanswered stream its reset is put off at most.
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(250);

/// Most streams held at once. Each keeps its upstream stream slot, its h2 stream state and a
/// small task, but no response data: it goes as soon as the response headers come, and gRPC
/// sends nothing before them. A flood of streams reset at once against a backend slowed by it
/// (the rapid-reset test in `tests/hostile.rs`) kept more than 256 held; 4,096 held cost about
/// 3 MiB there.
pub const MAX_HELD: usize = 4096;

static HELD: AtomicUsize = AtomicUsize::new(0);

/// Streams held now.
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// One place in the [`MAX_HELD`] budget.
struct Place;

impl Place {
    fn take() -> Option<Place> {
        HELD.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < MAX_HELD).then_some(n + 1)
        })
        .ok()
        .map(|_| Place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An opened upstream stream until its response headers arrive. Dropped before that (the call
/// was dropped), it hands the stream to a short-lived task that resets it once the backend has
/// answered or [`HOLD`] has passed since it opened.
pub struct Unanswered {
    opened: Option<Opened>,
    since: Instant,
}

impl Unanswered {
    /// Watches `opened`, opened at `since`.
    pub fn new(opened: Opened, since: Instant) -> Unanswered {
        Unanswered {
            opened: Some(opened),
            since,
        }
    }

    /// The stream.
    pub fn get(&mut self) -> &mut Opened {
        self.opened.as_mut().expect("present until settled")
    }

    /// The stream, now that the call goes on with it (or ends it itself).
    pub fn settle(mut self) -> Opened {
        self.opened.take().expect("present until settled")
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(mut opened) = self.opened.take() else {
            return;
        };
        let until = self.since + HOLD;
        if Instant::now() >= until {
            return; // Old enough: the backend has long taken it; reset now.
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(place) = Place::take() else {
            return;
        };
        runtime.spawn(async move {
            let _place = place;
            let answered = poll_fn(|cx| opened.response.poll_unpin(cx).map(|_| ()));
            let _ = tokio::time::timeout_at(until, answered).await;
            // Dropping `opened` resets the stream if it is still open.
        });
    }
}
