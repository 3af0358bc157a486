//! Upstream streams whose call ended before the backend answered: reset at once, unless their
//! connection is under a flood of such resets, when they are held briefly first.
//!
//! A client's cancel (or reset) must reach the backend as promptly as over a direct connection:
//! a backend that learns of it late takes a client stream whose END_STREAM came first for
//! complete, and answers a call its client gave up on. So a stream is reset at once unless it
//! is part of a flood: its client connection drops calls before their answer more than
//! [`CLIENT_FLOOD`] times a second, or its upstream connection sees more than [`PROMPT_RESETS`]
//! streams a second dropped within [`FLOOD_AGE`] of opening, from all clients together.
//!
//! In a flood a client is opening streams and resetting them at once (the 2023 "rapid reset"
//! pattern): forwarded as they come, HEADERS and RST_STREAM back to back, they trip the
//! backend's HTTP/2 stack, which counts streams reset before its application took them (h2 and
//! hyper allow 20 at once) and answers more with GOAWAY ENHANCE_YOUR_CALM, failing every other
//! client's call on that shared upstream connection. Such a stream, dropped within [`HOLD`] of
//! opening it, is kept open until the backend answers it (it has taken the stream by then) or
//! [`HOLD`] has passed since it opened, then reset. At most [`MAX_HELD`] are held per process;
//! past that, streams are reset at once.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use h2::client::ResponseFuture;
use h2::SendStream;
use tokio::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::telemetry::Registry;
use crate::upstream::pool::Lease;
/// A stream opened on an endpoint, not yet answered.
pub(super) struct Opened {
    pub(super) index: usize,
    pub(super) lease: Lease,
    pub(super) response: ResponseFuture,
    pub(super) send: SendStream<Bytes>,
}

/// Young early resets a second that go out at once per upstream connection, from all its
/// clients together: a quarter of h2's and hyper's limit of 20 streams reset before the server
/// took them, so that even the last of one second's and the first of the next, back to back,
/// stay under it.
pub const PROMPT_RESETS: u64 = 5;

/// A client connection that has dropped more than this many calls before their answer in the
/// current second is flooding (a flooder's connection torn down drops hundreds at once): fewer
/// than h2's and hyper's limit of 20 resets before the server took the streams.
pub const CLIENT_FLOOD: u64 = 8;

/// For the upstream connection's count, only a stream dropped sooner than this after it was
/// opened counts (the flood pattern: open and reset at once), so many clients' ordinary cancels
/// together are not taken for a flood.
pub const FLOOD_AGE: std::time::Duration = std::time::Duration::from_millis(10);

/// How long after opening an unanswered stream its reset is put off at most, under a flood.
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(250);

/// Most streams held at once. Each keeps its upstream stream slot, its h2 stream state and a
/// small task, but no response data: it goes as soon as the response headers come, and gRPC
/// sends nothing before them. A flood of streams reset at once against a backend slowed by it
/// (the rapid-reset test in `tests/it/hostile.rs`) kept more than 256 held; 4,096 held cost about
/// 3 MiB there.
pub const MAX_HELD: usize = 4096;

static HELD: AtomicUsize = AtomicUsize::new(0);

/// Streams held now.
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// The gauge `synapsor_upstream_streams_held`: streams held now, in the whole process.
#[derive(Clone, Debug)]
pub struct HeldStreams;

impl HeldStreams {
    /// Adds the gauge to `registry` (once).
    pub fn register(registry: &Registry) {
        registry.collector("upstream_streams_held", || HeldStreams);
    }
}

impl Collector for HeldStreams {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let gauge = ConstGauge::new(held() as i64);
        gauge.encode(encoder.encode_descriptor(
            "synapsor_upstream_streams_held",
            "Upstream streams whose call ended before the backend answered, held before their \
             reset.",
            None,
            gauge.metric_type(),
        )?)
    }
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
pub struct Unanswered<'a> {
    opened: Option<Opened>,
    since: Instant,
    client: Option<&'a crate::stack::ClientEarlyResets>,
}

impl<'a> Unanswered<'a> {
    /// Watches `opened`, opened at `since` for a client connection whose early resets
    /// `client` counts.
    pub fn new(
        opened: Opened,
        since: Instant,
        client: Option<&'a crate::stack::ClientEarlyResets>,
    ) -> Unanswered<'a> {
        Unanswered {
            opened: Some(opened),
            since,
            client,
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

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(mut opened) = self.opened.take() else {
            return;
        };
        let until = self.since + HOLD;
        if Instant::now() >= until {
            return; // Old enough: the backend has long taken it; reset now.
        }
        // A flood: this client connection drops many calls before their answer; or the upstream
        // connection sees many young ones from all its clients.
        let client_flood = self
            .client
            .as_ref()
            .is_some_and(|c| c.0.hit() > CLIENT_FLOOD);
        let young = Instant::now() - self.since < FLOOD_AGE;
        let upstream_flood = young && opened.lease.early_reset() > PROMPT_RESETS;
        if !(client_flood || upstream_flood) {
            return; // Reset now, as a direct client would.
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
