//! A pool's settings, resolved from the YAML once, and the HTTP/2 windows and frame size the
//! gateway announces.

use std::sync::Arc;
use std::time::Duration;

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
