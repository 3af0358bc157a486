//! The `bindgen!` calls: Rust types and call stubs for the `synapsor:plugin/interceptor` world,
//! once per major contract version. [`v2`] (`wit/plugin.wit`, 0.2.x) is the current contract and
//! the types the rest of the host works in; [`v1`] (`wit/v0.1/plugin.wit`, frozen) serves
//! components built against any 0.1.x, converted at the edge (`compat.rs`). Exports are called
//! with `call_async`, so a plugin that runs long yields to the worker's other tasks at every
//! epoch tick.

#![allow(missing_docs, clippy::all)]

/// The 0.1 contract (header hooks only).
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "wit/v0.1",
        world: "interceptor",
        exports: { default: async },
    });
}

/// The 0.2 contract (message hooks, call properties, plugin-defined metrics).
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "interceptor",
        exports: { default: async },
    });
}

pub use v2::synapsor::plugin::host::Level;
pub use v2::synapsor::plugin::types::{
    CallProperties, Header, HeaderOp, Hooks, Message, MessageAction, Metric, MetricKind, Reject,
    RequestAction, RequestInfo, ResponseAction, ResponseInfo, StatusOverride,
};
pub use v2::{Interceptor, InterceptorPre};
