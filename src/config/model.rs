//! The native configuration schema. Every field is part of the product; the README documents each.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use super::endpoint::EndpointSpec;
use super::stage::StageConfig;

/// The whole gateway configuration.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Threads and runtimes.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The admin HTTP listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// One gRPC listener per entry.
    pub listeners: Vec<ListenerConfig>,
    /// Named upstream groups that listeners and routes point at.
    pub upstreams: Vec<UpstreamConfig>,
    /// Reloading this file while the gateway runs.
    #[serde(default)]
    pub reload: ReloadConfig,
}

/// When `synapsor run` reloads its config file: always on SIGHUP and admin `POST /reload`;
/// on a change to the file when `watch` is on.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the file's content changes (default `true`).
    #[serde(default = "yes")]
    pub watch: bool,
    /// How often the file is read for changes (default `1s`); a change is applied once the
    /// file has read the same twice in a row, so a half-written file is never loaded.
    #[serde(default = "default_poll")]
    pub poll_interval: Dur,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            poll_interval: default_poll(),
        }
    }
}

fn default_poll() -> Dur {
    Dur::secs(1)
}

/// How the gateway uses the machine's cores.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads, each with its own runtime and upstream connections; `0` (the default)
    /// means one per core.
    #[serde(default)]
    pub workers: usize,
}

impl RuntimeConfig {
    /// The number of workers to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The admin listener: `/healthz`, `/readyz`, `/config`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to serve on (default `127.0.0.1:9901`).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Set `false` to run without an admin listener.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            enabled: true,
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:9901".parse().unwrap()
}

fn yes() -> bool {
    true
}

/// One gRPC listener (an address:port) and where its calls go.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The upstream group for calls no route matches; without it, such calls get UNIMPLEMENTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Routes tried in order before the default upstream.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Stages every call of this listener passes, in this order, before it is routed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interceptors: Vec<StageConfig>,
    /// How long in-flight calls may run after SIGTERM/SIGINT before the gateway exits.
    #[serde(default = "default_drain")]
    pub drain_timeout: Dur,
    /// Most client connections open at once; further ones wait in the accept backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS announced to each client connection.
    #[serde(default = "default_max_streams")]
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the largest request header block accepted, in bytes.
    #[serde(default = "default_max_header_list")]
    pub max_header_list_size: u32,
    /// How long a new connection may take to send the HTTP/2 preface.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Dur,
    /// Interval of the gateway's PINGs to each client connection; `0` turns them off.
    #[serde(default = "default_client_keepalive")]
    pub keepalive_time: Dur,
    /// A client connection that does not answer a PING within this is closed.
    #[serde(default = "default_client_keepalive_timeout")]
    pub keepalive_timeout: Dur,
    /// After this long (±10% jitter) a client connection gets GOAWAY, so long-lived clients
    /// reconnect and spread over the gateway's replicas; `0` (the default) never.
    #[serde(default)]
    pub max_connection_age: Dur,
    /// How long calls may still run on a connection aged out by `max_connection_age` before it
    /// is closed.
    #[serde(default = "default_age_grace")]
    pub max_connection_age_grace: Dur,
    /// TLS (ALPN h2) on this listener; h2c when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::tls::ListenerTlsConfig>,
}

fn default_age_grace() -> Dur {
    Dur::secs(30)
}

fn default_client_keepalive() -> Dur {
    Dur::secs(60)
}
fn default_client_keepalive_timeout() -> Dur {
    Dur::secs(20)
}

fn default_drain() -> Dur {
    Dur::secs(30)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_streams() -> u32 {
    1024
}
fn default_max_header_list() -> u32 {
    16 * 1024
}
fn default_handshake_timeout() -> Dur {
    Dur::secs(10)
}

/// A route: calls matching it go to `upstream`. Exactly one matcher is set.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches when the `:path` starts with this (for example `/billing.v1.` or `/pkg.Svc/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Matches when a metadata entry has exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataMatch>,
    /// The upstream group for matching calls.
    pub upstream: String,
    /// Stages run, after the listener's, only for calls this route matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interceptors: Vec<StageConfig>,
}

/// A metadata name and the value it must have.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataMatch {
    /// Metadata (header) name, lower case.
    pub name: String,
    /// The exact value.
    pub value: String,
}

/// A named group of endpoints with its balancer and pool settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used by listeners, routes, logs and error messages.
    pub name: String,
    /// How an endpoint is picked for each call.
    #[serde(default)]
    pub balance: Balance,
    /// The endpoints: `host:port#weight` or `{ address, weight }`.
    pub endpoints: Vec<EndpointSpec>,
    /// TLS towards the endpoints (h2c when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::tls::UpstreamTlsConfig>,
    /// Longest wait for the upstream's response headers (never cuts a stream that has begun);
    /// `0` turns it off.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Connection pool settings, per endpoint.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Active health checks of every endpoint (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<super::health::HealthCheckConfig>,
    /// Passive outlier detection (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<super::outlier::OutlierConfig>,
    /// An endpoint that joins or rejoins rotation (added by a reload, back from an ejection or
    /// a failed health check) ramps from 10% to its full weight over this time; `0` (the
    /// default) turns it off.
    #[serde(default, skip_serializing_if = "Dur::is_zero")]
    pub slow_start: Dur,
    /// How often `dns://` endpoints are resolved again (default `30s`).
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: Dur,
}

fn default_resolve_interval() -> Dur {
    Dur::secs(30)
}

fn default_request_timeout() -> Dur {
    Dur::secs(30)
}

/// Load-balancing policy of an upstream group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted random.
    RandomWeight,
    /// Fewest in-flight streams per unit of weight (open streams count until they end).
    #[default]
    LeastRequest,
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices over peak-EWMA latency times in-flight streams.
    P2cEwma,
}

/// What the pool does when every connection of an endpoint is full and the maximum is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// Wait in a bounded queue for at most `queue_timeout`, then RESOURCE_EXHAUSTED.
    Strict,
    /// Open extra connections past the maximum; close them when idle.
    #[default]
    Loose,
}

/// Per-endpoint HTTP/2 connection pool settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// `strict` or `loose`.
    #[serde(default)]
    pub mode: PoolMode,
    /// Connections dialled at start and kept open.
    #[serde(default = "one")]
    pub min_connections: usize,
    /// Most connections (in `loose` mode, extra ones may open past it).
    #[serde(default = "default_max_conns")]
    pub max_connections: usize,
    /// `strict` mode: longest wait for a free stream slot.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: Dur,
    /// `strict` mode: most calls waiting at once per endpoint; more get RESOURCE_EXHAUSTED.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Connections above the minimum idle this long are closed.
    #[serde(default = "default_idle")]
    pub idle_timeout: Dur,
    /// A connection older than this takes no new streams and closes when its streams end;
    /// `0` turns it off.
    #[serde(default = "default_lifetime")]
    pub max_lifetime: Dur,
    /// `false` gives every call its own connection.
    #[serde(default = "yes")]
    pub reuse: bool,
    /// Longest wait for a TCP connect plus HTTP/2 handshake.
    #[serde(default = "default_dial")]
    pub dial_timeout: Dur,
    /// Cap of the exponential reconnect backoff.
    #[serde(default = "default_backoff")]
    pub backoff_max_delay: Dur,
    /// HTTP/2 keepalive, after gRPC A8: a connection with calls open that has received nothing
    /// for this long gets a PING; connections without calls are never pinged (TCP keepalive
    /// watches them). `0` turns PINGs off. The default, 5 min, is the most often stock gRPC
    /// servers (C-core/grpcio, grpc-go, grpc-java) accept PINGs on a quiet connection: set it
    /// lower only for servers configured to permit it (`synapsor check` warns).
    #[serde(default = "default_keepalive")]
    pub keepalive_time: Dur,
    /// A connection whose PING is not answered within this is dropped (its calls fail with
    /// UNAVAILABLE).
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: Dur,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::default(),
            min_connections: 1,
            max_connections: default_max_conns(),
            queue_timeout: default_queue_timeout(),
            queue_size: default_queue_size(),
            idle_timeout: default_idle(),
            max_lifetime: default_lifetime(),
            reuse: true,
            dial_timeout: default_dial(),
            backoff_max_delay: default_backoff(),
            keepalive_time: default_keepalive(),
            keepalive_timeout: default_keepalive_timeout(),
        }
    }
}

fn one() -> usize {
    1
}
fn default_max_conns() -> usize {
    8
}
fn default_queue_timeout() -> Dur {
    Dur::secs(1)
}
fn default_queue_size() -> usize {
    1024
}
fn default_idle() -> Dur {
    Dur::secs(60)
}
fn default_lifetime() -> Dur {
    Dur::secs(600)
}
fn default_dial() -> Dur {
    Dur::secs(5)
}
fn default_backoff() -> Dur {
    Dur::secs(3)
}
/// The shortest PING interval stock gRPC servers accept on a connection with calls open and no
/// data flowing (C-core `GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS`, grpc-go
/// `keepalive.EnforcementPolicy.MinTime`, grpc-java `permitKeepAliveTime`: 5 min each).
pub const STOCK_MIN_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

fn default_keepalive() -> Dur {
    Dur(STOCK_MIN_PING_INTERVAL)
}
fn default_keepalive_timeout() -> Dur {
    Dur::secs(20)
}
