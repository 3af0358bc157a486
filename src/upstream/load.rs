//! What a balancer sees of an endpoint: the [`Load`] trait (as tower's `Load` gives its
//! balancers a comparable load per service), and the endpoint's [`Weight`] — its configured share
//! and the slow-start ramp that scales it while the endpoint (re)joins rotation (Envoy's
//! `slow_start_config`: from 10% up to 100% over the window).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock;

/// Effective weights are in hundredths of a configured weight unit.
pub const WEIGHT_SCALE: u64 = 100;
/// The share a slow-starting endpoint begins with, in percent of its weight.
const SLOW_START_FLOOR: u64 = 10;

/// An endpoint as a balancer picks among them. Implemented by the upstream endpoint, and by
/// plain test types so balancers are tested without pools or sockets.
pub trait Load {
    /// True when the endpoint may take calls (in rotation).
    fn available(&self) -> bool;
    /// Its weight in [`WEIGHT_SCALE`] units, slow start applied; at least 1.
    fn effective_weight(&self) -> u64;
    /// The share of its weight a slow-starting endpoint gets now, in percent; `None` at full
    /// weight.
    fn ramp_share(&self) -> Option<u64>;
    /// Streams open on it right now.
    fn in_flight(&self) -> u64;
    /// Peak-EWMA of its time to response headers, in nanoseconds.
    fn latency_nanos(&self) -> f64;
}

impl<L: Load + ?Sized> Load for Arc<L> {
    fn available(&self) -> bool {
        (**self).available()
    }
    fn effective_weight(&self) -> u64 {
        (**self).effective_weight()
    }
    fn ramp_share(&self) -> Option<u64> {
        (**self).ramp_share()
    }
    fn in_flight(&self) -> u64 {
        (**self).in_flight()
    }
    fn latency_nanos(&self) -> f64 {
        (**self).latency_nanos()
    }
}

/// An endpoint's configured weight and slow-start ramp; written by a reload (weight, window),
/// and by health checks and outlier detection when the endpoint comes back (the ramp).
pub struct Weight {
    /// Relative share of traffic.
    weight: AtomicU32,
    /// The ramp began at this time (ms on [`clock::now_ms`]); 0 = full weight.
    ramp_from: AtomicU64,
    /// Slow-start window in ms; 0 = off.
    slow_start_ms: AtomicU64,
}

impl Weight {
    /// Weight `w`, no slow start.
    pub fn new(w: u32) -> Weight {
        Weight {
            weight: AtomicU32::new(w),
            ramp_from: AtomicU64::new(0),
            slow_start_ms: AtomicU64::new(0),
        }
    }

    /// The configured weight.
    pub fn get(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight (a reload reweighted the endpoint).
    pub fn set(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }

    /// Sets the slow-start window applied whenever the endpoint (re)joins rotation.
    pub fn set_slow_start(&self, window: Duration) {
        self.slow_start_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
    }

    /// Starts a slow-start ramp at `at_ms` (when a window is configured).
    pub fn ramp_from(&self, at_ms: u64) {
        if self.slow_start_ms.load(Ordering::Relaxed) > 0 {
            self.ramp_from.store(at_ms.max(1), Ordering::Relaxed);
        }
    }

    /// The weight a balancer uses, in [`WEIGHT_SCALE`] units: the configured weight, scaled
    /// down while a slow-start ramp runs (from 10% up to 100% over the window).
    pub fn effective(&self) -> u64 {
        let full = u64::from(self.get()) * WEIGHT_SCALE;
        match self.ramp_share() {
            None => full,
            Some(pct) => (full * pct / 100).max(1),
        }
    }

    /// The share of its weight a ramping endpoint gets now, in percent; `None` at full weight.
    pub fn ramp_share(&self) -> Option<u64> {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == 0 {
            return None;
        }
        let now = clock::now_ms();
        let window = self.slow_start_ms.load(Ordering::Relaxed);
        if now < from {
            return Some(SLOW_START_FLOOR);
        }
        let elapsed = now - from;
        if window == 0 || elapsed >= window {
            self.ramp_from.store(0, Ordering::Relaxed);
            return None;
        }
        Some((elapsed * 100 / window).max(SLOW_START_FLOOR))
    }
}
