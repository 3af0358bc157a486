//! Passive outlier detection: calls that fail `consecutive_failures` times in a row on one
//! endpoint (connect errors, lost connections, resets, `request_timeout`, and the configured
//! gRPC codes) eject it for `base_ejection_time` × the number of its ejections, capped at
//! `max_ejection_time`; never more than `max_ejection_percent` of a group at once (Envoy's
//! outlier detection, `consecutive_gateway_failure`). Counts live in each endpoint's shared
//! [`Ejection`], so every worker's calls add up; only this module writes it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock;
use crate::config::OutlierConfig;

/// An endpoint's outlier state, shared by every worker.
#[derive(Default)]
pub struct Ejection {
    /// Failed calls in a row.
    consecutive: AtomicU32,
    /// Ejected until this time (ms on [`clock::now_ms`]); the last ejection's end, or 0.
    until: AtomicU64,
    /// Ejections counted towards the next ejection's length.
    count: AtomicU32,
    /// Ejections since start (for metrics).
    total: AtomicU64,
}

impl Ejection {
    /// True while an ejection keeps the endpoint out.
    pub fn ejected(&self) -> bool {
        let until = self.until_ms();
        until != 0 && clock::now_ms() < until
    }

    /// The end of the last ejection (ms on [`clock::now_ms`]); 0 if never ejected.
    pub fn until_ms(&self) -> u64 {
        self.until.load(Ordering::Relaxed)
    }

    /// Time left of the current ejection (zero when not ejected).
    pub fn ejected_for(&self) -> Duration {
        Duration::from_millis(self.until_ms().saturating_sub(clock::now_ms()))
    }

    /// Ejections since the gateway started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// An endpoint as outlier detection sees it (implemented by the upstream endpoint).
pub trait Ejectable {
    /// `host:port`, for the log.
    fn address(&self) -> &str;
    /// Its outlier state.
    fn ejection(&self) -> &Ejection;
    /// Called when an ejection ending at `until_ms` starts: the endpoint slow-starts from then.
    fn ejected_until(&self, until_ms: u64);
}

impl<E: Ejectable + ?Sized> Ejectable for Arc<E> {
    fn address(&self) -> &str {
        (**self).address()
    }
    fn ejection(&self) -> &Ejection {
        (**self).ejection()
    }
    fn ejected_until(&self, until_ms: u64) {
        (**self).ejected_until(until_ms)
    }
}

/// The outlier policy of one upstream group (shared by its workers).
pub struct Outlier {
    upstream: Arc<str>,
    threshold: u32,
    mask: u32,
    base_ms: u64,
    max_ms: u64,
    max_percent: u64,
    /// Ejection decisions are taken one at a time, so the percentage cap holds exactly.
    lock: Mutex<()>,
}

impl Outlier {
    /// The policy for group `upstream`.
    pub fn new(upstream: &str, cfg: &OutlierConfig) -> Arc<Outlier> {
        Arc::new(Outlier {
            upstream: upstream.into(),
            threshold: cfg.consecutive_failures,
            mask: cfg.code_mask(),
            base_ms: cfg.base_ejection_time.0.as_millis() as u64,
            max_ms: cfg.max_ejection_time.0.as_millis() as u64,
            max_percent: u64::from(cfg.max_ejection_percent),
            lock: Mutex::new(()),
        })
    }

    /// Records a call that ended with `grpc-status` `code` (`None`: no status at all, which
    /// counts as a failure).
    pub fn record_status<E: Ejectable>(&self, ep: &E, group: &[E], code: Option<usize>) {
        match code {
            Some(c) if c < 32 && self.mask & (1 << c) != 0 => self.failure(ep, group, c),
            Some(_) => self.success(ep),
            None => self.failure(ep, group, usize::MAX),
        }
    }

    /// Records a call the endpoint served.
    pub fn success<E: Ejectable>(&self, ep: &E) {
        // Only write when there is something to reset: the line is shared by every worker.
        let c = &ep.ejection().consecutive;
        if c.load(Ordering::Relaxed) != 0 {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed call (`code` for the log; `usize::MAX` for a transport failure).
    pub fn failure<E: Ejectable>(&self, ep: &E, group: &[E], code: usize) {
        let (address, state) = (ep.address(), ep.ejection());
        let n = state
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n < self.threshold || state.ejected() {
            return;
        }
        let Ok(_guard) = self.lock.lock() else {
            return;
        };
        if state.ejected() {
            return;
        }
        let ejected = group.iter().filter(|e| e.ejection().ejected()).count() as u64;
        let allowed = if self.max_percent == 0 {
            0
        } else {
            (group.len() as u64 * self.max_percent / 100).max(1)
        };
        if ejected >= allowed {
            tracing::debug!(upstream = %self.upstream, endpoint = %address, failures = n,
                "outlier not ejected: max_ejection_percent reached");
            return;
        }
        let now = clock::now_ms();
        let last_end = state.until_ms();
        // An endpoint that stayed in for max_ejection_time since its last ejection starts over.
        let mut k = state.count.load(Ordering::Relaxed);
        if last_end == 0 || now.saturating_sub(last_end) >= self.max_ms {
            k = 0;
        }
        k = k.saturating_add(1);
        let length = self.base_ms.saturating_mul(u64::from(k)).min(self.max_ms);
        let until = now + length;
        state.count.store(k, Ordering::Relaxed);
        state.until.store(until, Ordering::Relaxed);
        state.total.fetch_add(1, Ordering::Relaxed);
        state.consecutive.store(0, Ordering::Relaxed);
        ep.ejected_until(until);
        let status = if code == usize::MAX {
            "transport failure".to_string()
        } else {
            format!("grpc-status {code}")
        };
        tracing::warn!(upstream = %self.upstream, endpoint = %address, failures = n,
            last = %status, ejection = k, for_ms = length, "outlier ejected");
    }
}
