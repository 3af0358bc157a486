//! The WebAssembly plugin host: components of the `synapsor:plugin/interceptor` world (`wit/`)
//! run as one more stage, [`WasmLayer`].
//!
//! - [`engine`]: one wasmtime `Engine` (pooling allocator, epoch interruption, one ticker
//!   thread), the linkers, compilation with a cache by content hash.
//! - [`instance`]: the store state host functions see, the memory limiter, the bounded instance
//!   pool and one hook call under its deadline.
//! - [`loader`]: load, reload on file change or SIGHUP, and the watcher thread.
//! - [`offload`]: hook calls that run long move off the worker to the plugin threads.
//! - [`convert`]: what a plugin is shown, and checking what it answers.
//! - [`stats`]: per-plugin metrics.
//!
//! A trap, a timeout, a refused memory growth or an invalid answer ends that hook call only: the
//! instance is dropped, and the call gets UNAVAILABLE naming the plugin (`on_error: deny`) or
//! goes on unchanged (`allow`).

pub mod bindings;
pub mod convert;
pub mod engine;
pub mod instance;
pub mod loader;
pub mod offload;
mod service;
pub mod stats;

use std::fmt;

pub use loader::{describe, reload_all, Description, Plugin};
pub use service::{WasmLayer, WasmService};
pub use stats::{PluginMetrics, Stats};

/// Why a plugin hook call failed.
#[derive(Debug)]
pub enum Failure {
    /// The plugin trapped (a panic, an out-of-bounds access, a stack overflow, …).
    Trap(String),
    /// It ran past its timeout; in which hook (`init`, `on-request`, …).
    Timeout(&'static str),
    /// It tried to grow its memory past `memory_limit`.
    Memory(String),
    /// It answered something the gateway refuses (an illegal header, a bad status code, …).
    Invalid(String),
    /// Every instance was busy for longer than the timeout.
    Busy,
    /// `init` returned an error.
    Init(String),
    /// A new instance could not be created.
    Instantiate(String),
}

impl Failure {
    /// The failure's kind, as labelled in metrics.
    pub fn kind(&self) -> &'static str {
        stats::KINDS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            Failure::Trap(_) => 0,
            Failure::Timeout(_) => 1,
            Failure::Memory(_) => 2,
            Failure::Invalid(_) => 3,
            Failure::Busy => 4,
            Failure::Init(_) => 5,
            Failure::Instantiate(_) => 6,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Trap(d) => write!(f, "trapped ({d})"),
            Failure::Timeout(during) => write!(f, "timed out in {during}"),
            Failure::Memory(d) => write!(f, "hit its memory limit ({d})"),
            Failure::Invalid(d) => write!(f, "returned an invalid answer: {d}"),
            Failure::Busy => f.write_str("had no free instance within its timeout"),
            Failure::Init(d) => write!(f, "init failed: {d}"),
            Failure::Instantiate(d) => write!(f, "could not be instantiated ({d})"),
        }
    }
}
