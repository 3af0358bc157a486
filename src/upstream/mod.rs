//! The upstream side: everything between "this call goes to group G" and an HTTP/2 stream on
//! one of G's endpoints — as `pingora-load-balancing` keeps discovery, health checks, background
//! tasks and selection together.
//!
//! - `group`: an upstream group ([`UpstreamGroup`], shared by the workers): reloads and DNS
//!   changes swap members in, keeping the state and connections of endpoints that stay;
//!   `instance`: each worker's view of it ([`Upstream`], its [`Members`]).
//! - [`endpoint`]: one endpoint's shared state, made of parts each written by one module.
//! - [`load`]: the [`load::Load`] trait balancers pick over, and the endpoint's weight with its
//!   slow-start ramp; [`ewma`]: the peak-EWMA latency estimate.
//! - [`balance`]: `random_weight`, `least_request`, `round_robin`, `p2c_ewma`.
//! - [`pool`]: per-endpoint multiplexed HTTP/2 connections, expansion, queueing, keepalive,
//!   idle and lifetime recycling, reconnect backoff.
//! - [`health`]: active health checks (gRPC health protocol or TCP).
//! - [`outlier`]: passive outlier detection — endpoints whose calls keep failing are ejected
//!   for a time that grows with each ejection.
//! - [`discovery`]: `dns://name:port` endpoints and their lookups.
//! - [`metrics`]: every endpoint's state for `/metrics`, read at each scrape.
//!
//! Dependencies run downwards in that list's reverse: `group` uses all of them; `endpoint`
//! composes the parts; `balance`, `pool`, `health` and `outlier` know only their own part and a
//! small trait the endpoint implements, never the endpoint (docs/ARCHITECTURE.md).

pub mod balance;
pub mod discovery;
pub mod endpoint;
pub mod ewma;
mod group;
pub mod health;
mod instance;
pub mod load;
pub mod metrics;
pub mod outlier;
pub mod pool;

pub use group::UpstreamGroup;
pub use instance::{Members, Upstream};
