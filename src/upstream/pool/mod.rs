//! Per-endpoint pools of multiplexed HTTP/2 connections.
//!
//! A call leases one stream slot on the connection with the fewest streams open. When every
//! connection is at the peer's SETTINGS_MAX_CONCURRENT_STREAMS, a new one is dialled, up to
//! `max_connections`; past that, `strict` pools queue (bounded in length and time) and `loose`
//! pools open extra connections that close once idle. A background task per endpoint keeps
//! `min_connections` open, reconnects with backoff, and closes idle and aged connections. The
//! connection list is read without a lock (`ArcSwap`); counters are atomics.

mod conn;
mod maintain;
mod reach;
mod wait;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use h2::client::SendRequest;
use tokio::sync::Notify;

pub use conn::Conn;
pub use maintain::{maintain, Maintained};
pub use reach::{log_failure, Reach};

use crate::clock;
use crate::config::{PoolConfig, PoolMode};

/// HTTP/2 stream window the gateway announces (upstream and downstream).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// HTTP/2 connection window the gateway announces to clients.
pub const CONN_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 connection window the gateway announces to upstreams: room for 1024 full stream
/// windows. An upstream connection carries many clients' streams; with a window of a few
/// streams, four clients that stop reading would stall every other stream on it. What the
/// gateway buffers stays bounded per stream by [`STREAM_WINDOW`].
pub const UPSTREAM_CONN_WINDOW: u32 = STREAM_WINDOW * 1024;
/// Largest HTTP/2 frame the gateway accepts.
pub const MAX_FRAME: u32 = 64 * 1024;

/// Pool settings resolved from the config once at start-up.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// strict or loose.
    pub mode: PoolMode,
    /// Connections kept open.
    pub min: usize,
    /// Most connections (loose may exceed it).
    pub max: usize,
    /// Longest strict-mode queue wait.
    pub queue_timeout: Duration,
    /// Most waiters in the strict-mode queue.
    pub queue_size: usize,
    /// Idle connections above `min` close after this.
    pub idle_timeout: Duration,
    /// Connections stop taking streams after this.
    pub max_lifetime: Option<Duration>,
    /// `false`: a connection per call.
    pub reuse: bool,
    /// Connect + handshake timeout.
    pub dial_timeout: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// PING interval; `None` disables keepalive.
    pub keepalive_time: Option<Duration>,
    /// PING answer timeout.
    pub keepalive_timeout: Option<Duration>,
    /// HTTP/2 stream window.
    pub stream_window: u32,
    /// HTTP/2 connection window.
    pub conn_window: u32,
    /// HTTP/2 max frame size.
    pub max_frame_size: u32,
    /// TLS towards the endpoint (h2c when `None`).
    pub tls: Option<Arc<crate::tls::ClientTls>>,
}

impl PoolSettings {
    /// Resolves the YAML settings.
    pub fn from_config(c: &PoolConfig) -> PoolSettings {
        PoolSettings {
            mode: c.mode,
            min: c.min_connections,
            max: c.max_connections,
            queue_timeout: c.queue_timeout.0,
            queue_size: c.queue_size,
            idle_timeout: c.idle_timeout.0,
            max_lifetime: c.max_lifetime.nonzero(),
            reuse: c.reuse,
            dial_timeout: c.dial_timeout.0,
            backoff_max: c.backoff_max_delay.0,
            keepalive_time: c.keepalive_time.nonzero(),
            keepalive_timeout: c.keepalive_time.nonzero().map(|_| c.keepalive_timeout.0),
            stream_window: STREAM_WINDOW,
            conn_window: UPSTREAM_CONN_WINDOW,
            max_frame_size: MAX_FRAME,
            tls: None,
        }
    }
}

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
            let until = wait::until(may_dial, limit, &mut queued_until);
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
    fn remove(&self, id: u64) {
        self.conns.rcu(|list| {
            list.iter()
                .filter(|c| c.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
        self.maint.notify_one();
        self.wake.notify_waiters();
    }

    fn ping_interval(&self) -> Duration {
        self.group.ping_interval()
    }

    /// The upstream sent GOAWAY ENHANCE_YOUR_CALM, which gRPC servers send for `too_many_pings`
    /// (h2 does not let us read the debug data that would tell it from other causes): halve
    /// the PING rate.
    fn too_many_pings(&self) {
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
