//! synapsor: a transparent gRPC gateway — a reverse proxy and load balancer that forwards any
//! gRPC service without its protobuf schema.
//!
//! A call travels: listener → route → balancer → pool → pump → upstream, and the response comes
//! back the same way, frame by frame.
//!
//! # Layout
//!
//! - [`config`]: the YAML model (native and original-synapsor formats), loading with file, line
//!   and field in every error, and validation.
//! - [`server`]: listeners — bounded accept dealing connections to per-core workers (each its
//!   own current-thread runtime), HTTP/2 (h2c) handshake, a task per stream, keepalive, drain.
//! - [`stack`]: the one request/response/body/error type every stage shares, and
//!   [`stack::status_of`], where errors become gRPC statuses.
//! - [`proxy`]: the per-stream path — [`proxy::Forward`] (the innermost service: route, open the
//!   upstream stream, await headers) and [`proxy::serve_stream`] (call the stack, pump the
//!   response back), the [`proxy::Dir`] pump, deadlines and cancellation.
//! - [`interceptor`]: built-in stages (tower layers): `rate_limit`, `concurrency_limit`,
//!   `api_key`, `jwt`, `access`, `metrics`, `access_log`.
//! - [`plugin`]: the WebAssembly plugin host (wasmtime; the contract is `wit/plugin.wit`): the
//!   `wasm` stage, instance pools under memory and time limits, hot reload.
//! - [`route`]: the upstream group of a call, by listener, `:path` prefix or metadata value.
//! - [`balance`]: `random_weight`, `least_request`, `round_robin`, `p2c_ewma`.
//! - [`pool`]: per-endpoint multiplexed HTTP/2 connections, expansion, queueing, keepalive,
//!   idle and lifetime recycling, reconnect backoff.
//! - [`upstream`], [`endpoint`]: a group of endpoints and each endpoint's load and health.
//! - [`health`]: active health checks (gRPC health protocol or TCP) that take endpoints out of
//!   rotation and bring them back.
//! - [`outlier`]: passive outlier detection — endpoints whose calls keep failing are ejected
//!   for a time that grows with each ejection.
//! - [`discovery`]: `dns://name:port` endpoints, resolved again every `resolve_interval`.
//! - [`error`]: every way the gateway ends a call, mapped to a gRPC status in one place.
//! - [`grpc`]: status codes, trailers-only responses, `grpc-timeout`, hop-by-hop headers.
//! - [`sockopt`]: TCP keepalive and `TCP_USER_TIMEOUT` on every client and upstream socket.
//! - [`tls`]: rustls configs for listeners (certificates re-read on change, client
//!   certificates) and upstreams (CA, mTLS, SNI), and the one stream type for h2c and TLS.
//! - [`admin`]: `/healthz`, `/readyz`, `/config`.
//! - [`gateway`]: assembles and runs all of the above from a config.

pub mod admin;
pub mod batch_io;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod plugin;
pub mod proxy;
pub mod route;
pub mod server;
pub mod sockopt;
pub mod stack;
pub mod stage;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use gateway::{Gateway, Running};
