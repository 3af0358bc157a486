//! Per-endpoint pools of multiplexed HTTP/2 connections.
//!
//! A call leases one stream slot on the connection with the fewest streams open. When every
//! connection is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS, a new one is dialled, up to
//! `max_connections`; past that, `strict` pools queue (bounded in length and time) and `loose`
//! pools open extra connections that close once idle. A background task per endpoint keeps
//! `min_connections` open, reconnects with backoff, and closes idle and aged connections. The
//! connection list is read without a lock (`ArcSwap`); counters are atomics.

mod conn;
pub mod maintain;
mod reach;
mod settings;
mod wait;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Notify;

pub use conn::Conn;
pub use reach::{log_failure, Reach};
pub use settings::{PoolSettings, CONN_WINDOW, MAX_FRAME, STREAM_WINDOW};

use crate::clock;

/// State shared by every endpoint of one upstream group.
pub struct UpstreamShared {
    /// The group's name, for logs and errors.
    pub name: Arc<str>,
    /// Current keepalive interval in ms (doubled on GOAWAY `too_many_pings`).
    ping_interval_ms: AtomicU64,
    warned_pings: AtomicBool,
}

impl UpstreamShared {
    /// The keepalive interval in force now.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.load(Ordering::Relaxed))
    }

    /// Shared state starting at the configured keepalive interval.
    pub fn new(name: &str, keepalive: Option<Duration>) -> Arc<UpstreamShared> {
        Arc::new(UpstreamShared {
            name: name.into(),
            ping_interval_ms: AtomicU64::new(keepalive.map_or(0, |d| d.as_millis() as u64)),
            warned_pings: AtomicBool::new(false),
        })
    }
}

/// The connections of one endpoint.
pub struct Pool {
    inner: Arc<PoolInner>,
}

/// Pool state shared with connection drivers and the maintenance task.
pub struct PoolInner {
    settings: PoolSettings,
    upstream: Arc<str>,
    address: Arc<str>,
    group: Arc<UpstreamShared>,
    conns: ArcSwap<Vec<Arc<Conn>>>,
    dialing: AtomicUsize,
    waiting: AtomicUsize,
    /// Wakes queued calls when a slot frees or a connection opens.
    wake: Notify,
    /// Wakes the maintenance task when a connection ends.
    maint: Notify,
    /// Bumped after each dial; `last_dial_ok` says how it went, `last_dial_error` why it failed.
    dial_generation: AtomicU64,
    last_dial_ok: AtomicBool,
    last_dial_error: std::sync::Mutex<String>,
    next_id: AtomicU64,
    /// Set when the endpoint leaves its group: no new streams or dials.
    retired: AtomicBool,
}

/// Why no stream slot could be had.
#[derive(Debug)]
pub enum AcquireError {
    /// Dialling failed.
    Connect(String),
    /// The strict queue was full or the wait timed out.
    Exhausted(String),
    /// The endpoint left its group (a reload or DNS change removed it).
    Retired,
}

/// One stream slot on a connection; give it back by dropping it when the stream ends.
pub struct Lease {
    conn: Arc<Conn>,
    pool: Arc<PoolInner>,
}

impl Lease {
    /// A handle to open the stream with.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.conn.sender()
    }

    /// Counts a stream on this connection reset before the backend answered it; returns how
    /// many its connection has seen this second.
    pub fn early_reset(&self) -> u64 {
        self.conn.early_reset()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.release();
        if self.pool.waiting.load(Ordering::Relaxed) > 0 {
            self.pool.wake.notify_one();
        }
    }
}

impl Pool {
    /// An empty pool for `address` in group `group`.
    pub fn new(settings: PoolSettings, group: Arc<UpstreamShared>, address: &str) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                settings,
                upstream: group.name.clone(),
                address: address.into(),
                group,
                conns: ArcSwap::from_pointee(Vec::new()),
                dialing: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                wake: Notify::new(),
                maint: Notify::new(),
                dial_generation: AtomicU64::new(0),
                last_dial_ok: AtomicBool::new(true),
                last_dial_error: std::sync::Mutex::new(String::new()),
                next_id: AtomicU64::new(1),
                retired: AtomicBool::new(false),
            }),
        }
    }

    /// The shared state (for the maintenance task).
    pub fn inner(&self) -> &Arc<PoolInner> {
        &self.inner
    }

    /// Open connections (those that take new streams).
    pub fn open_connections(&self) -> usize {
        let now = clock::now_ms();
        self.inner
            .conns
            .load()
            .iter()
            .filter(|c| c.usable(now))
            .count()
    }

    /// Ids of the connections in the pool (each new connection gets a new id).
    pub fn connection_ids(&self) -> Vec<u64> {
        self.inner.conns.load().iter().map(|c| c.id).collect()
    }

    /// Streams open on pooled connections.
    pub fn streams(&self) -> usize {
        self.inner.conns.load().iter().map(|c| c.in_flight()).sum()
    }

    /// Leases a stream slot on an open connection if one has room, without waiting or dialling.
    pub fn try_acquire(&self) -> Option<Lease> {
        self.inner.try_lease()
    }

    /// Takes the pool out of service after its endpoint left the group: no new streams or
    /// dials, the maintenance task ends, and each connection closes once its streams end.
    pub fn retire(&self) {
        let p = &self.inner;
        p.retired.store(true, Ordering::Release);
        // Connections close when the last handle goes: the list's, then each lease's.
        p.conns.store(Arc::new(Vec::new()));
        p.maint.notify_one();
        p.wake.notify_waiters();
    }

    /// True once [`Pool::retire`] ran.
    pub fn retired(&self) -> bool {
        self.inner.retired.load(Ordering::Acquire)
    }

    /// The longest a call waits for a stream slot (`queue_timeout`).
    pub fn queue_timeout(&self) -> Duration {
        self.inner.settings.queue_timeout
    }

    /// Waits until a stream on this endpoint ends or a connection opens or closes (something
    /// that may free a stream slot), or until `until`; true when it was not the timer. Used by
    /// a call whose stream the endpoint refused, before it tries the endpoint again.
    pub async fn wait_for_release(&self, until: tokio::time::Instant) -> bool {
        let p = &self.inner;
        let notified = p.wake.notified();
        p.waiting.fetch_add(1, Ordering::AcqRel);
        let woken = tokio::time::timeout_at(until, notified).await.is_ok();
        p.waiting.fetch_sub(1, Ordering::AcqRel);
        woken
    }

    /// Leases a stream slot, dialling or queueing as the settings say.
    pub async fn acquire(&self) -> Result<Lease, AcquireError> {
        let p = &self.inner;
        if p.retired.load(Ordering::Acquire) {
            return Err(AcquireError::Retired);
        }
        if !p.settings.reuse {
            // Dialling is the rare path: boxed, so its large future does not bloat every call's.
            let conn = Box::pin(conn::dial(p, false))
                .await
                .map_err(AcquireError::Connect)?;
            conn.try_reserve();
            return Ok(p.lease(conn));
        }
        // A strict pool's queue wait is bounded in total, however often a call is woken and
        // loses the freed slot to another.
        let mut queued_until = None;
        loop {
            if let Some(lease) = p.try_lease() {
                return Ok(lease);
            }
            let (open, may_dial) = p.may_dial();
            if may_dial
                && p.dialing
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                let r = Box::pin(p.dial_and_add(open >= p.settings.max)).await;
                match r {
                    Ok(conn) if conn.try_reserve() => return Ok(p.lease(conn)),
                    Ok(_) => continue,
                    Err(e) => return Err(AcquireError::Connect(e)),
                }
            }
            // Wait: for the dial in progress, or (strict, at the maximum) for a free slot.
            let limit = if may_dial {
                p.settings.dial_timeout
            } else {
                p.settings.queue_timeout
            };
            p.enqueue()?;
            let generation = p.dial_generation.load(Ordering::Acquire);
            let mut notified = Box::pin(p.wake.notified());
            notified.as_mut().enable();
            let lease = p.try_lease();
            let until = wait_until(may_dial, limit, &mut queued_until);
            let waited = if lease.is_none() {
                tokio::time::timeout_at(until, notified).await.is_ok()
            } else {
                true
            };
            p.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Some(lease) = lease {
                return Ok(lease);
            }
            p.after_wait(waited, may_dial, limit, generation)?;
        }
    }
}

impl PoolInner {
    /// Leases a slot on the usable connection with the fewest open streams.
    fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let now = clock::now_ms();
        let conns = self.conns.load();
        let mut best: Option<&Arc<Conn>> = None;
        let mut best_load = usize::MAX;
        for c in conns.iter() {
            let n = c.in_flight();
            if n < best_load && n < c.max_streams() && c.usable(now) {
                best = Some(c);
                best_load = n;
            }
        }
        let conn = best?;
        if conn.try_reserve() {
            return Some(Lease {
                conn: conn.clone(),
                pool: self.clone(),
            });
        }
        None
    }

    /// A lease on `conn`, whose slot the caller has reserved.
    fn lease(self: &Arc<Self>, conn: Arc<Conn>) -> Lease {
        Lease {
            conn,
            pool: self.clone(),
        }
    }

    /// Dials one connection and adds it to the list; the caller has set `dialing` to 1.
    async fn dial_and_add(self: &Arc<Self>, overflow: bool) -> Result<Arc<Conn>, String> {
        let r = conn::dial(self, overflow).await;
        // A dial that finishes after the pool retired serves only its caller.
        if let (Ok(c), false) = (&r, self.retired.load(Ordering::Acquire)) {
            self.conns.rcu(|list| {
                let mut v = Vec::with_capacity(list.len() + 1);
                v.extend(list.iter().cloned());
                v.push(c.clone());
                v
            });
        }
        if let Err(e) = &r {
            *self
                .last_dial_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = e.clone();
        }
        self.last_dial_ok.store(r.is_ok(), Ordering::Release);
        self.dial_generation.fetch_add(1, Ordering::AcqRel);
        self.dialing.store(0, Ordering::Release);
        self.wake.notify_waiters();
        r
    }

    /// Removes a connection from the list (it takes no new streams; open ones finish).
    fn remove_conn(&self, id: u64) {
        self.conns.rcu(|list| {
            list.iter()
                .filter(|c| c.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
        self.maint.notify_one();
        self.wake.notify_waiters();
    }

    /// The upstream sent GOAWAY ENHANCE_YOUR_CALM, which gRPC servers send for `too_many_pings`
    /// (h2 does not let us read the debug data that would tell it from other causes): halve
    /// the PING rate.
    fn slow_pings(&self) {
        let g = &self.group;
        let now = g.ping_interval_ms.load(Ordering::Relaxed);
        let doubled = now.saturating_mul(2).min(3_600_000);
        if g.ping_interval_ms
            .compare_exchange(now, doubled, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            && !g.warned_pings.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                upstream = %g.name,
                "upstream sent GOAWAY ENHANCE_YOUR_CALM (gRPC servers send it for too many \
                 pings, h2 and hyper also for too many early resets): keepalive interval raised \
                 to {doubled} ms (and doubled again on each further one)"
            );
        }
    }
}

/// When a wait ends: `limit` from now for a dial in progress (`may_dial`); for a strict pool's
/// queue, `limit` after the call's first wait, kept in `queued_until`.
fn wait_until(
    may_dial: bool,
    limit: Duration,
    queued_until: &mut Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    if may_dial {
        tokio::time::Instant::now() + limit
    } else {
        *queued_until.get_or_insert_with(|| tokio::time::Instant::now() + limit)
    }
}

impl conn::Owner for PoolInner {
    fn settings(&self) -> &PoolSettings {
        &self.settings
    }
    fn upstream(&self) -> &str {
        &self.upstream
    }
    fn address(&self) -> &str {
        &self.address
    }
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
    fn ping_interval(&self) -> Duration {
        self.group.ping_interval()
    }
    fn too_many_pings(&self) {
        self.slow_pings();
    }
    fn remove(&self, id: u64) {
        self.remove_conn(id);
    }
}
