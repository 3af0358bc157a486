//! Whether an endpoint can be reached: consecutive connect failures, the exponential backoff
//! they put the endpoint out of rotation for, and why the last connect failed. Written only by
//! the pool's dials (the background dial of `min_connections` and a call's own dial).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock;

/// An endpoint's connect state, shared by every worker's pool for it.
#[derive(Default)]
pub struct Reach {
    /// Consecutive connect failures.
    failures: AtomicU32,
    /// Out of rotation until this time (ms on [`clock::now_ms`]); 0 = in rotation.
    down_until: AtomicU64,
    /// Why the last connect failed, while the endpoint is in connect backoff.
    last_error: Mutex<Option<Arc<str>>>,
}

impl Reach {
    /// Records a failed connect and why: the endpoint leaves rotation for an exponential backoff
    /// (with jitter, capped at `cap`). Returns the failure count and the backoff.
    pub fn failed(&self, cap: Duration, why: &str) -> (u32, Duration) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let wait = backoff(n, cap);
        let until = clock::now_ms() + wait.as_millis() as u64;
        self.down_until.store(until.max(1), Ordering::Relaxed);
        (n, wait)
    }

    /// Records a successful connect: back in rotation.
    pub fn succeeded(&self) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.failures.store(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// The end of the current backoff (ms on [`clock::now_ms`]); 0 when not backing off.
    pub fn down_until_ms(&self) -> u64 {
        self.down_until.load(Ordering::Relaxed)
    }

    /// Time left until the endpoint is tried again (zero when in rotation).
    pub fn retry_in(&self) -> Duration {
        Duration::from_millis(self.down_until_ms().saturating_sub(clock::now_ms()))
    }

    /// Consecutive connect failures so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the last connect failed, while backing off.
    pub fn last_error(&self) -> Option<Arc<str>> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Exponential backoff with jitter: 100 ms doubling per failure, capped, then 50–100% of that.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << failures.min(16).saturating_sub(1));
    let d = base.min(cap);
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// The first failure of a run is a warning; repeats are debug lines, so a down endpoint does
/// not flood the log.
pub fn log_failure(upstream: &str, address: &str, n: u32, wait: Duration, error: &str) {
    if n == 1 {
        tracing::warn!(upstream, endpoint = address, error, retry_in = ?wait,
            "cannot connect to endpoint; it leaves rotation until it answers");
    } else {
        tracing::debug!(upstream, endpoint = address, error, failures = n, retry_in = ?wait,
            "cannot connect to endpoint");
    }
}
