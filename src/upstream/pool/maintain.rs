//! The background task of each endpoint: keep `min_connections` open, reconnect with backoff,
//! close idle and aged connections, refresh the peer's stream limits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{log_failure, Pool, Reach};
use crate::clock;

/// What pool maintenance needs of the endpoint it keeps connections to (implemented by the
/// upstream endpoint, so the pool does not depend on it).
pub trait Maintained: Send + Sync + 'static {
    /// This worker's pool for the endpoint.
    fn pool(&self) -> &Pool;
    /// The endpoint's connect state, shared by every worker.
    fn reach(&self) -> &Reach;
    /// True when the endpoint is in rotation (not backing off, ejected or unhealthy).
    fn available(&self) -> bool;
}

/// Runs until `stop` changes or the pool is retired.
pub async fn maintain<E: Maintained>(ep: Arc<E>, mut stop: watch::Receiver<bool>) {
    let p = ep.pool().inner().clone();
    let s = &p.settings;
    let mut tick = Duration::from_secs(1).min(s.idle_timeout / 2);
    if let Some(life) = s.max_lifetime {
        tick = tick.min(life / 4);
    }
    let tick = tick.max(Duration::from_millis(20));
    loop {
        if ep.pool().retired() {
            return;
        }
        let now = clock::now_ms();
        let list = p.conns.load_full();
        // Connections that retire before the next tick do not count: their replacements are
        // dialled ahead, so the pool never sits empty while a connection ages out.
        let soon = now + tick.as_millis() as u64;
        let mut open = list.iter().filter(|c| c.usable(soon)).count();
        for c in list.iter() {
            let usable = c.usable(now);
            let idle = c.idle_for(now);
            let idle_close = match idle {
                Some(ms) if c.overflow => ms >= tick.as_millis() as u64,
                Some(ms) => ms >= s.idle_timeout.as_millis() as u64 && open > s.min,
                None => false,
            };
            if !usable || idle_close {
                if c.usable(soon) {
                    open -= 1;
                }
                tracing::debug!(upstream = %p.upstream, endpoint = %p.address, conn = c.id,
                    idle = idle_close, "retiring connection");
                p.remove_conn(c.id);
            } else {
                c.refresh_max_streams();
            }
        }
        let mut sleep_for = tick;
        if s.reuse && open < s.min {
            if ep.available() {
                if p.dialing
                    .compare_exchange(
                        0,
                        1,
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    match p.dial_and_add(false).await {
                        Ok(_) => {
                            if ep.reach().failures() > 0 {
                                tracing::info!(upstream = %p.upstream, endpoint = %p.address,
                                    "endpoint reachable again");
                            }
                            ep.reach().succeeded();
                            continue;
                        }
                        Err(e) => {
                            let (n, wait) = ep.reach().failed(s.backoff_max, &e);
                            log_failure(&p.upstream, &p.address, n, wait, &e);
                            sleep_for = wait.min(tick);
                        }
                    }
                }
            } else {
                sleep_for = ep.reach().retry_in().min(tick);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = p.maint.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
