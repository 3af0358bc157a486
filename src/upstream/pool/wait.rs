//! Waiting for a stream slot: the steps of [`Pool::acquire`](super::Pool::acquire) around its
//! wait for a dial in progress or, in a strict pool at `max_connections`, for a free slot.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{AcquireError, PoolInner};
use crate::clock;
use crate::config::PoolMode;

impl PoolInner {
    /// The connections that take new streams now, and whether another may be dialled: while
    /// fewer than `max_connections` are open, or past it in a loose pool.
    pub(super) fn may_dial(&self) -> (usize, bool) {
        let now = clock::now_ms();
        let open = self.conns.load().iter().filter(|c| c.usable(now)).count();
        let may_dial = open < self.settings.max || self.settings.mode == PoolMode::Loose;
        (open, may_dial)
    }

    /// Counts the caller among the waiters (it takes itself off when its wait ends); `Exhausted`,
    /// not counted, when `queue_size` callers wait already.
    pub(super) fn enqueue(&self) -> Result<(), AcquireError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.settings.queue_size {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AcquireError::Exhausted(format!(
                "queue of {} full",
                self.settings.queue_size
            )));
        }
        Ok(())
    }

    /// Whether a caller whose wait (of at most `limit`; `waited`: it was woken, not timed out)
    /// brought no slot tries again (`Ok`) or gives up: `Exhausted` when a strict pool's queue
    /// wait timed out; `Connect` when a dial that ended during the wait (`generation`: the dial
    /// count before it) failed and left no connection (with that dial's error), or when the
    /// wait for a dial timed out.
    pub(super) fn after_wait(
        &self,
        waited: bool,
        may_dial: bool,
        limit: Duration,
        generation: u64,
    ) -> Result<(), AcquireError> {
        if !waited && !may_dial {
            return Err(AcquireError::Exhausted(format!("waited {limit:?}")));
        }
        if self.dial_generation.load(Ordering::Acquire) != generation
            && !self.last_dial_ok.load(Ordering::Acquire)
            && self.conns.load().is_empty()
        {
            let why = self
                .last_dial_error
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            return Err(AcquireError::Connect(why.clone()));
        }
        if !waited {
            return Err(AcquireError::Connect(format!("timed out after {limit:?}")));
        }
        Ok(())
    }
}
