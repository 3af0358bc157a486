//! The one `bindgen!` call: Rust types and call stubs for the `synapsor:plugin/interceptor`
//! world in `wit/`. Exports are called with `call_async`, so a plugin that runs long yields to
//! the worker's other tasks at every epoch tick.

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    path: "wit",
    world: "interceptor",
    exports: { default: async },
});

pub use self::synapsor::plugin::host::Level;
pub use self::synapsor::plugin::types::{Header, HeaderOp, Reject, StatusOverride};
