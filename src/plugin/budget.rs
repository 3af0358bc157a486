//! The time one hook call (or instantiation, or `init`) may use, checked at every epoch tick on
//! the thread running it: `timeout` of CPU time — what the guest's thread spent, from the
//! thread's own clock (`CLOCK_THREAD_CPUTIME_ID`) — and a wall-clock cap of twice that (at
//! least 100 ms), for a guest that waits instead of running or a machine so busy that the
//! plugin threads (which run at a lower priority) hardly get a core.
//!
//! CPU time, not wall time, is what a plugin is charged: a call the kernel descheduled for a
//! while, on a machine whose cores are all busy, has not used its time (measured: with the wall
//! clock, 10 ms calls of 1 µs failed as `timeout` a few times per second of a saturated
//! stream-100b benchmark). Between two ticks on the same thread the charge is the thread's CPU
//! time (which may include other tasks it ran while the call had yielded, so never below the
//! guest's own use), at most the wall time between them. An interval the thread clock cannot
//! measure — up to the first tick (the clock is read from then on), or after the call moved to
//! another thread (the plugin threads resume a yielded call on any of them) — is charged as
//! running, at most one tick.

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

/// How long a call runs before an epoch tick makes it yield (and, on a worker, move to the
/// plugin threads, see [`super::offload`]): a tick that comes sooner lets it go on. With the
/// 1 ms tick a call that runs long yields within about 1.25 ms of starting.
pub const INLINE_SLICE: Duration = Duration::from_micros(250);

/// How often the epoch advances (the engine's ticker thread): the granularity of plugin
/// timeouts, and how often a long plugin call yields to the worker's other tasks.
pub const TICK: Duration = Duration::from_millis(1);

/// The running call's clock.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    started: Instant,
    cpu_limit: Duration,
    wall_deadline: Instant,
    used: Duration,
    /// The last tick (or the start).
    last: Instant,
    /// The thread the last tick ran on and its CPU time then.
    mark: Option<(i32, Duration)>,
}

impl Budget {
    /// A call starting now that may use `limit` of CPU time, and at most twice that (and at
    /// least 100 ms) of wall time.
    pub fn start(limit: Duration) -> Budget {
        let started = Instant::now();
        Budget {
            started,
            cpu_limit: limit,
            wall_deadline: started + (limit * 2).max(Duration::from_millis(100)),
            used: Duration::ZERO,
            last: started,
            // Read at the first tick, not here: the thread's CPU clock is a system call, and
            // most calls end before any tick.
            mark: None,
        }
    }

    /// The start of a wait for the host (a callout, a Redis round trip): see [`Budget::resume`].
    pub fn pause(&self) -> Instant {
        Instant::now()
    }

    /// The end of a wait that started at `since`: the wait is not the guest's time, so the
    /// wall-clock cap moves on by as long, and the thread clock starts over (the guest may
    /// resume on another thread, and this one ran other tasks meanwhile).
    pub fn resume(&mut self, since: Instant) {
        let now = Instant::now();
        self.wall_deadline += now - since;
        self.last = now;
        self.mark = None;
    }

    /// What an epoch tick does to the call: interrupt it once over budget; let it go on early
    /// in its first slice; else yield.
    pub fn tick(&mut self) -> UpdateDeadline {
        let now = Instant::now();
        let wall = now - self.last;
        self.last = now;
        let mark = here();
        self.used += match (self.mark, mark) {
            // On the same thread: its CPU time, at most the wall time that passed.
            (Some((tid, before)), Some((tid_now, cpu))) if tid == tid_now => {
                cpu.saturating_sub(before).min(wall)
            }
            // The first tick, or the call moved to another thread: not measured, so charged
            // as running, but for at most one tick.
            _ => wall.min(TICK),
        };
        self.mark = mark;
        if self.used >= self.cpu_limit || now >= self.wall_deadline {
            UpdateDeadline::Interrupt
        } else if now - self.started < INLINE_SLICE {
            UpdateDeadline::Continue(1)
        } else {
            UpdateDeadline::Yield(1)
        }
    }
}

/// This thread's id and CPU time (`None` where the platform has no per-thread clock).
fn here() -> Option<(i32, Duration)> {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let cpu = Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
        Some((rustix::thread::gettid().as_raw_nonzero().get(), cpu))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinning_thread_runs_out_and_a_sleeping_one_only_at_the_wall_cap() {
        let mut b = Budget::start(Duration::from_millis(20));
        // The first tick starts the CPU clock.
        b.tick();
        // 30 ms of this thread's CPU time, however long a busy machine makes that take.
        let cpu = || here().map_or(Duration::ZERO, |(_, c)| c);
        let from = cpu();
        while cpu() - from < Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        assert!(
            matches!(b.tick(), UpdateDeadline::Interrupt),
            "30 ms of CPU"
        );
        // 5 ms of CPU, so the wall-clock cap is its floor, 100 ms.
        let mut b = Budget::start(Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            matches!(b.tick(), UpdateDeadline::Yield(1)),
            "asleep: no CPU used"
        );
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            matches!(b.tick(), UpdateDeadline::Interrupt),
            "past 100 ms of wall time"
        );
    }
}
