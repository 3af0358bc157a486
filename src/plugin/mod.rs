//! The WebAssembly plugin host: components of the `synapsor:plugin/interceptor` world (`wit/`)
//! run as one more stage, [`WasmLayer`].
//!
//! - [`engine`]: one wasmtime `Engine` (pooling allocator, epoch interruption, one ticker
//!   thread), the linkers, compilation with a cache by content hash.
//! - [`bindings`], [`compat`]: the contract's two versions (0.2, and 0.1 served unchanged).
//! - [`host`]: the store state host functions see (counters, metrics, log budget, the call's
//!   properties), the memory limiter.
//! - [`instance`]: the bounded instance pool and one hook call under its [`budget`] (CPU time).
//! - [`message`], [`codec`]: the message hooks in a call's body, gRPC framing and compression.
//! - [`custom`]: metrics plugins define.
//! - [`callout`], [`state`]: calls out to upstream groups, and the plugin's key-value store
//!   (in memory or Redis); `host_io.rs` offers both to the guest.
//! - [`loader`]: load, reload on file change or SIGHUP, and the watcher thread.
//! - [`offload`]: hook calls that run long move off the worker to the plugin threads.
//! - [`convert`]: what a plugin is shown, and checking what it answers.
//! - [`stats`]: per-plugin metrics.
//!
//! A trap, a timeout, a refused memory growth or an invalid answer ends that hook call only: the
//! instance is dropped, and the call gets UNAVAILABLE naming the plugin (`on_error: deny`) or
//! goes on unchanged (`allow`).

pub mod bindings;
pub mod budget;
pub mod callout;
pub mod codec;
pub mod compat;
pub mod convert;
pub mod custom;
pub mod engine;
mod failure;
pub mod host;
mod host_io;
pub mod instance;
mod io_metrics;
pub mod loader;
pub mod message;
pub mod offload;
mod service;
pub mod state;
pub mod stats;
mod task;

pub use failure::Failure;
pub use loader::{describe, reload_all, Description, Plugin};
pub use service::{WasmLayer, WasmService};
pub use stats::{PluginMetrics, Stats};
