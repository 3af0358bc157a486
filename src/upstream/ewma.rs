//! Peak-EWMA latency, as linkerd's balancer uses it: a slow response raises the estimate at once,
//! fast ones lower it gradually with a time-based decay.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock;

/// Decay time constant of the average.
const DECAY_NANOS: f64 = 10e9;
/// The estimate before any response was seen (optimistic, so new endpoints get tried).
const DEFAULT_RTT_NANOS: f64 = 1e6;

/// A lock-free peak-EWMA of latencies in nanoseconds. Concurrent updates may lose one another's
/// contribution; the estimate stays a sound approximation.
pub struct PeakEwma {
    value: AtomicU64,
    stamp: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new()
    }
}

impl PeakEwma {
    /// A fresh estimate at the default latency.
    pub fn new() -> PeakEwma {
        PeakEwma {
            value: AtomicU64::new(DEFAULT_RTT_NANOS.to_bits()),
            stamp: AtomicU64::new(clock::now_nanos()),
        }
    }

    /// Adds one observed latency.
    pub fn observe(&self, rtt_nanos: u64) {
        let now = clock::now_nanos();
        let prev = f64::from_bits(self.value.load(Ordering::Relaxed));
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let rtt = rtt_nanos as f64;
        let next = if rtt > prev {
            rtt
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let w = (-elapsed / DECAY_NANOS).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The current estimate in nanoseconds.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }
}
