//! A cheap monotonic millisecond clock shared by the balancer, pool and health state, so that
//! timestamps fit in atomics.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process (never 0 after the first millisecond).
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Nanoseconds since the first call in this process.
pub fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// True at most once per `every_ms` across threads: the caller whose call flips `last` to now
/// does the periodic work (evicting idle keys, checking a file for changes).
pub fn due(last: &std::sync::atomic::AtomicU64, every_ms: u64) -> bool {
    use std::sync::atomic::Ordering;
    let now = now_ms();
    let prev = last.load(Ordering::Relaxed);
    now.saturating_sub(prev) >= every_ms
        && last
            .compare_exchange(prev, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

/// A per-second count, in one atomic: the second (high 32 bits, on
/// [`now_ms`] / 1000) and the count (low 32 bits).
#[derive(Debug, Default)]
pub struct PerSecond(std::sync::atomic::AtomicU64);

impl PerSecond {
    /// Counts one; returns the count of the current second, this one included.
    pub fn hit(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let second = now_ms() / 1000;
        let step = |v: u64| {
            if v >> 32 == second {
                v.saturating_add(1)
            } else {
                (second << 32) | 1
            }
        };
        let before = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| Some(step(v)))
            .unwrap_or(0);
        step(before) & 0xffff_ffff
    }
}
