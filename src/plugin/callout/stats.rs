//! Counts of one plugin's callouts to one upstream group: by result, and a latency histogram
//! of the calls that were sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::super::bindings::{CalloutError, CalloutResponse};

/// Latency bucket bounds, in seconds (100 µs to 10 s).
pub const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// How a callout ended, as labelled in metrics (`result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered OK.
    Ok,
    /// Answered with another status.
    Status,
    /// No answer in time.
    Timeout,
    /// The group could not be reached.
    Unavailable,
    /// A malformed request or answer.
    Invalid,
    /// Over `max_in_flight` or `max_per_hook`.
    Limited,
    /// A group the plugin may not call.
    NotAllowed,
}

/// The `result` label of each [`Outcome`], in order.
pub const RESULTS: [&str; 7] = [
    "ok",
    "status",
    "timeout",
    "unavailable",
    "invalid",
    "limited",
    "not_allowed",
];

impl Outcome {
    /// The outcome of a finished call.
    pub fn of(r: &Result<CalloutResponse, CalloutError>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(CalloutError::Status(_)) => Outcome::Status,
            Err(CalloutError::Timeout) => Outcome::Timeout,
            Err(CalloutError::Unavailable(_)) => Outcome::Unavailable,
            Err(CalloutError::Invalid(_)) => Outcome::Invalid,
            Err(CalloutError::Limited(_)) => Outcome::Limited,
            Err(CalloutError::NotAllowed(_)) => Outcome::NotAllowed,
        }
    }
}

/// One target's counters.
#[derive(Default)]
pub struct TargetStats {
    /// Calls by outcome, in the order of [`RESULTS`].
    pub results: [AtomicU64; RESULTS.len()],
    /// Sent calls per latency bucket (not cumulative).
    pub buckets: [AtomicU64; BUCKETS.len()],
    /// Sent calls.
    pub count: AtomicU64,
    /// Their total latency, in nanoseconds.
    pub sum_nanos: AtomicU64,
}

impl TargetStats {
    /// Counts one call; `took` for one that was sent.
    pub fn count(&self, outcome: Outcome, took: Option<Duration>) {
        self.results[outcome as usize].fetch_add(1, Ordering::Relaxed);
        let Some(d) = took else { return };
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}
