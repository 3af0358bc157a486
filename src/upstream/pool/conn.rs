//! One upstream HTTP/2 connection: dialling it, driving it with keepalive PINGs, and leasing
//! stream slots on it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::TcpStream;

use crate::batch_io::Batched;
use crate::tls::Io;

use super::settings::PoolSettings;
use crate::clock;

/// What a connection needs of the pool it belongs to (implemented by the pool, so that a
/// connection does not depend on it).
pub trait Owner: Send + Sync + 'static {
    /// The pool's settings.
    fn settings(&self) -> &PoolSettings;
    /// The upstream group's name, for logs.
    fn upstream(&self) -> &str;
    /// The endpoint's address, as dialled.
    fn address(&self) -> &str;
    /// A fresh connection id, unique within the pool.
    fn next_id(&self) -> u64;
    /// The keepalive interval in force now (zero: no keepalive).
    fn ping_interval(&self) -> Duration;
    /// The peer sent GOAWAY ENHANCE_YOUR_CALM (what gRPC servers send for too many PINGs).
    fn too_many_pings(&self);
    /// Connection `id` ended: it takes no new streams.
    fn remove(&self, id: u64);
}

/// Recently reset streams an upstream connection remembers (h2's default is 10), so that the
/// server's frames already in flight for them are ignored.
const RECENT_RESETS: usize = 1024;

/// A connection in a pool.
pub struct Conn {
    /// Unique within its pool.
    pub id: u64,
    send: SendRequest<Bytes>,
    in_flight: AtomicUsize,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS, as last read.
    max_streams: AtomicUsize,
    /// When it stops taking new streams (ms on [`clock::now_ms`]); `u64::MAX` for never.
    pub expires_at: u64,
    /// When it last became idle (ms), 0 while streams are open.
    idle_since: AtomicU64,
    /// Opened past `max_connections` in loose mode: closed as soon as it is idle.
    pub overflow: bool,
    /// Shared with the task driving the connection.
    pub shared: Arc<ConnShared>,
    /// Young streams reset before the backend answered them, per second.
    early_resets: clock::PerSecond,
}

/// State shared between a [`Conn`] and the task that drives it.
pub struct ConnShared {
    /// Set once the connection has ended.
    pub closed: AtomicBool,
    /// When bytes last arrived from the peer (ms on [`clock::now_ms`]).
    pub last_read: Arc<AtomicU64>,
}

impl Conn {
    /// Streams open on it now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The peer's stream limit.
    pub fn max_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }

    /// Re-reads the peer's stream limit (it may change with a new SETTINGS frame).
    pub fn refresh_max_streams(&self) {
        self.max_streams
            .store(self.send.current_max_send_streams(), Ordering::Relaxed);
    }

    /// True when it may take a new stream at `now`.
    pub fn usable(&self, now: u64) -> bool {
        !self.shared.closed.load(Ordering::Relaxed) && now < self.expires_at
    }

    /// Takes one stream slot if the peer's limit allows.
    pub fn try_reserve(&self) -> bool {
        let max = self.max_streams();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a stream slot back; returns true when the connection became idle.
    pub fn release(&self) -> bool {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since
                .store(clock::now_ms().max(1), Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Milliseconds it has been idle at `now`, or `None` while streams are open.
    pub fn idle_for(&self, now: u64) -> Option<u64> {
        if self.in_flight() > 0 {
            return None;
        }
        let since = self.idle_since.load(Ordering::Relaxed);
        Some(now.saturating_sub(since))
    }

    /// A handle to open a stream on this connection.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }

    /// Counts one stream reset before the backend answered it; returns how many such resets
    /// this connection has seen in the current second, this one included.
    pub fn early_reset(&self) -> u64 {
        self.early_resets.hit()
    }
}

/// Dials `address`, completes the HTTP/2 handshake and one PING round trip (so the peer's
/// SETTINGS are known), and spawns the task that drives the connection.
pub async fn dial<O: Owner>(pool: &Arc<O>, overflow: bool) -> Result<Arc<Conn>, String> {
    let s = pool.settings();
    let last_read = Arc::new(AtomicU64::new(0));
    let fut = connect(&**pool, &last_read);
    let (send, conn, ping) = tokio::time::timeout(s.dial_timeout, fut)
        .await
        .map_err(|_| format!("timed out after {:?}", s.dial_timeout))??;
    let now = clock::now_ms();
    let expires_at = expiry(now, s.max_lifetime);
    let shared = Arc::new(ConnShared {
        closed: AtomicBool::new(false),
        last_read,
    });
    let c = Arc::new(Conn {
        id: pool.next_id(),
        max_streams: AtomicUsize::new(send.current_max_send_streams()),
        send,
        in_flight: AtomicUsize::new(0),
        expires_at,
        idle_since: AtomicU64::new(now.max(1)),
        overflow,
        shared: shared.clone(),
        early_resets: Default::default(),
    });
    tokio::spawn(drive(conn, ping, Arc::downgrade(&c), pool.clone()));
    Ok(c)
}

/// A connection [`connect`] made: the handle to open streams with, the connection for its
/// driver, and its PINGs.
type Connected = (
    SendRequest<Bytes>,
    h2::client::Connection<Batched<Io>, Bytes>,
    h2::PingPong,
);

/// The steps of [`dial`] within its `dial_timeout`: resolve the pool's address, connect (TLS if
/// set), the HTTP/2 handshake (reads counted in `last_read`), and one PING round trip. Errors
/// are the reasons [`dial`] reports.
async fn connect<O: Owner>(pool: &O, last_read: &Arc<AtomicU64>) -> Result<Connected, String> {
    let s = pool.settings();
    let addr = tokio::net::lookup_host(pool.address())
        .await
        .map_err(|e| format!("resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolve: no address".to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    crate::sockopt::tcp_keepalive(&tcp);
    let io = match &s.tls {
        Some(tls) => tls.connect(pool.address(), tcp).await?,
        None => Io::Plain(tcp),
    };
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(s.stream_window)
        .initial_connection_window_size(s.conn_window)
        .max_frame_size(s.max_frame_size)
        .enable_push(false)
        // A reset stream's frames still in flight from the server are ignored, not taken for
        // a protocol error, for up to this many recent resets; and h2's lifetime cap of 1,024
        // such late frames per connection (a guard against hostile servers) is lifted: on a
        // long-lived upstream connection with many cancelled calls, the gateway itself would
        // otherwise close the connection every other call shares.
        .max_concurrent_reset_streams(RECENT_RESETS)
        .max_local_error_reset_streams(None)
        .handshake::<_, Bytes>(Batched::watched(io, last_read.clone()))
        .await
        .map_err(|e| handshake_failed(&e.to_string()))?;
    let mut ping = conn.ping_pong().expect("first ping_pong");
    // Drive the connection until the PING comes back: by then the peer's SETTINGS are in.
    {
        let pong = ping.ping(h2::Ping::opaque());
        tokio::pin!(pong);
        tokio::select! {
            r = &mut conn => {
                return Err(match r {
                    Ok(()) => handshake_failed("the endpoint closed the connection"),
                    Err(e) => handshake_failed(&e.to_string()),
                });
            }
            r = &mut pong => { r.map_err(|e| handshake_failed(&e.to_string()))?; }
        }
    }
    Ok((send, conn, ping))
}

/// When a connection opened at `now` (ms on [`clock::now_ms`]) stops taking new streams:
/// `max_lifetime` later, less up to 10%; `u64::MAX` (never) without one.
fn expiry(now: u64, max_lifetime: Option<Duration>) -> u64 {
    match max_lifetime {
        Some(life) => {
            // Up to 10% jitter, so connections opened together do not all retire together.
            let ms = life.as_millis() as u64;
            now + ms - rand::random_range(0..=ms / 10)
        }
        None => u64::MAX,
    }
}

/// The reason of a failed HTTP/2 handshake, with what usually causes one: the endpoint does not
/// speak HTTP/2 with prior knowledge (h2c) on that port.
fn handshake_failed(what: &str) -> String {
    format!(
        "HTTP/2 handshake failed: {what} (is it an HTTP/2 gRPC server? an HTTP/1.1-only server, \
         or a TLS port reached without `tls:`, fails like this)"
    )
}

/// Runs the connection until it ends or a keepalive PING goes unanswered.
async fn drive<O: Owner>(
    conn: h2::client::Connection<Batched<Io>, Bytes>,
    ping: h2::PingPong,
    handle: Weak<Conn>,
    pool: Arc<O>,
) {
    let Some((shared, id)) = handle.upgrade().map(|c| (c.shared.clone(), c.id)) else {
        return;
    };
    let result = tokio::select! {
        r = conn => r.map_err(|e| {
            if e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                pool.too_many_pings();
            }
            e.to_string()
        }),
        e = keepalive(ping, &*pool, &shared.last_read, handle) => Err(e),
    };
    shared.closed.store(true, Ordering::Relaxed);
    match result {
        Ok(()) => {
            tracing::debug!(upstream = %pool.upstream(), endpoint = %pool.address(), conn = id, "connection closed")
        }
        Err(e) => {
            tracing::debug!(upstream = %pool.upstream(), endpoint = %pool.address(), conn = id, error = %e, "connection ended")
        }
    }
    pool.remove(id);
}

/// Keepalive after gRPC A8's client rules: a PING goes out only while streams are open and
/// nothing has arrived from the peer for the keepalive interval (the previous PING's answer
/// included), so consecutive PINGs reach the peer at least an interval apart. Stock gRPC
/// servers (C-core/grpcio, grpc-go, grpc-java) accept one PING per 5 minutes on a quiet
/// connection with calls open and one per 2 hours on one without; more often, a third early
/// PING is answered with GOAWAY ENHANCE_YOUR_CALM `too_many_pings`. Idle connections are never
/// pinged: TCP keepalive ([`crate::sockopt::tcp_keepalive`]) finds dead peers there. Returns when
/// a PING is not answered in time.
async fn keepalive<O: Owner>(
    mut ping: h2::PingPong,
    pool: &O,
    last_read: &AtomicU64,
    conn: Weak<Conn>,
) -> String {
    let Some(timeout) = pool.settings().keepalive_timeout else {
        return std::future::pending().await;
    };
    loop {
        let interval = pool.ping_interval();
        if interval.is_zero() {
            return std::future::pending().await;
        }
        let quiet = clock::now_ms().saturating_sub(last_read.load(Ordering::Relaxed));
        let interval_ms = interval.as_millis() as u64;
        if quiet < interval_ms {
            tokio::time::sleep(Duration::from_millis(interval_ms - quiet)).await;
            continue;
        }
        if conn.upgrade().is_none_or(|c| c.in_flight() == 0) {
            tokio::time::sleep(interval).await;
            continue;
        }
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keepalive PING failed: {e}"),
            Err(_) => return format!("keepalive PING not answered within {timeout:?}"),
        }
    }
}
