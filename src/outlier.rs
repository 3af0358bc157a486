//! Passive outlier detection: calls that fail `consecutive_failures` times in a row on one
//! endpoint (connect errors, lost connections, resets, `request_timeout`, and the configured
//! gRPC codes) eject it for `base_ejection_time` × the number of its ejections, capped at
//! `max_ejection_time`; never more than `max_ejection_percent` of a group at once. Counts live
//! in the shared [`EndpointState`], so every worker's calls add up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::clock;
use crate::config::OutlierConfig;
use crate::endpoint::{Endpoint, EndpointState};

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
    pub fn record_status(&self, ep: &EndpointState, group: &[Arc<Endpoint>], code: Option<usize>) {
        match code {
            Some(c) if c < 32 && self.mask & (1 << c) != 0 => self.failure(ep, group, c),
            Some(_) => self.success(ep),
            None => self.failure(ep, group, usize::MAX),
        }
    }

    /// Records a call the endpoint served.
    pub fn success(&self, ep: &EndpointState) {
        // Only write when there is something to reset: the line is shared by every worker.
        if ep.consecutive.load(Ordering::Relaxed) != 0 {
            ep.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed call (`code` for the log; `usize::MAX` for a transport failure).
    pub fn failure(&self, ep: &EndpointState, group: &[Arc<Endpoint>], code: usize) {
        let n = ep
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n < self.threshold || ep.ejected() {
            return;
        }
        let Ok(_guard) = self.lock.lock() else {
            return;
        };
        if ep.ejected() {
            return;
        }
        let ejected = group.iter().filter(|e| e.ejected()).count() as u64;
        let allowed = if self.max_percent == 0 {
            0
        } else {
            (group.len() as u64 * self.max_percent / 100).max(1)
        };
        if ejected >= allowed {
            tracing::debug!(upstream = %self.upstream, endpoint = %ep.address, failures = n,
                "outlier not ejected: max_ejection_percent reached");
            return;
        }
        let now = clock::now_ms();
        let last_end = ep.ejected_until.load(Ordering::Relaxed);
        // An endpoint that stayed in for max_ejection_time since its last ejection starts over.
        let mut k = ep.ejections.load(Ordering::Relaxed);
        if last_end == 0 || now.saturating_sub(last_end) >= self.max_ms {
            k = 0;
        }
        k = k.saturating_add(1);
        let length = self.base_ms.saturating_mul(u64::from(k)).min(self.max_ms);
        let until = now + length;
        ep.ejections.store(k, Ordering::Relaxed);
        ep.ejected_until.store(until, Ordering::Relaxed);
        ep.ejections_total.fetch_add(1, Ordering::Relaxed);
        ep.consecutive.store(0, Ordering::Relaxed);
        ep.ramp_from(until);
        let status = if code == usize::MAX {
            "transport failure".to_string()
        } else {
            format!("grpc-status {code}")
        };
        tracing::warn!(upstream = %self.upstream, endpoint = %ep.address, failures = n,
            last = %status, ejection = k, for_ms = length, "outlier ejected");
    }
}
