//! synapsor: a transparent gRPC gateway — a reverse proxy and load balancer that forwards any
//! gRPC service without its protobuf schema.
//!
//! A call travels: listener → route → balancer → pool → pump → upstream, and the response comes
//! back the same way, frame by frame.
//!
//! # Layout
//!
//! docs/ARCHITECTURE.md is the map: the request path, the module rules (tested by
//! `tests/it/layering.rs`), the status table and where to add a stage, a balancer or a plugin
//! hook. In request-path order, top first:
//!
//! - `server`: listeners — bounded accept dealing connections to per-core workers (each its own
//!   current-thread runtime), the HTTP/2 (h2c or TLS) handshake, a task per stream, drain.
//! - `proxy`: `serve_stream` (call the listener's service, pump the response back), the
//!   forwarder (route, open the upstream stream, await its head), the pump, deadlines and
//!   cancellation, the hold of streams cancelled in a reset flood.
//! - `stage`: built-in stages (tower layers): `rate_limit`, `concurrency_limit`, `api_key`,
//!   `jwt`, `access`, `metrics`, `access_log`; one observer layer for stages that watch a whole
//!   call.
//! - [`plugin`]: the WebAssembly plugin host (wasmtime; the contract is `wit/plugin.wit`): the
//!   `wasm` stage, instance pools under memory and time limits, hot reload.
//! - `stack`: the request, response, body and error types every layer shares, the call's
//!   context (peer, principal, rejection, the upstream that served it), and `status_of`, where
//!   errors become gRPC statuses.
//! - `route`: the upstream group of a call, by listener, `:path` prefix or metadata value.
//! - `upstream`: groups and endpoints, balancers, connection pools, health checks, outlier
//!   detection, DNS discovery.
//!
//! Beside the path: [`config`] (the YAML model, loading with file, line and field in every error,
//! validation), [`grpc`] (status codes, trailers-only responses, `grpc-timeout`, framing),
//! [`tls`] (rustls for listeners and upstreams), `telemetry` (the metrics registry), `error` (the
//! gateway's own errors), `admin` (the admin listener), `gateway` (assembly, reload, live
//! listeners), `clock`, `batch_io` and `sockopt`.

pub mod config;
pub mod grpc;
pub mod plugin;
pub mod tls;

mod admin;
mod batch_io;
mod clock;
mod error;
mod gateway;
mod proxy;
mod redis_store;
mod route;
mod server;
mod sockopt;
mod stack;
mod stage;
mod telemetry;
mod upstream;

pub use gateway::{Gateway, Reloader, Running};

/// What the benchmarks (`benches/`) drive directly, below the gateway's API: the routing table,
/// the upstream request a call becomes, an upstream group. Not a stable interface.
#[doc(hidden)]
pub mod bench {
    pub use crate::proxy::upstream_request;
    pub use crate::route::Router;
    pub use crate::upstream::UpstreamGroup;
}
