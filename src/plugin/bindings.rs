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

/// The 0.2 contract (message hooks, call properties, plugin-defined metrics; since 0.2.1
/// callouts and shared state).
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "interceptor",
        exports: { default: async },
        // The functions that wait (for an upstream, for Redis): the guest's fiber suspends,
        // the thread goes on with other tasks.
        imports: {
            "synapsor:plugin/callout.call": async,
            "synapsor:plugin/state.get": async,
            "synapsor:plugin/state.set": async,
            "synapsor:plugin/state.delete": async,
            "synapsor:plugin/state.compare-and-swap": async,
        },
    });
}

pub use v2::synapsor::plugin::callout::{
    Error as CalloutError, Request as CalloutRequest, Response as CalloutResponse,
    Status as CalloutStatus,
};
pub use v2::synapsor::plugin::host::Level;
pub use v2::synapsor::plugin::state::Error as StateError;
pub use v2::synapsor::plugin::types::{
    CallProperties, Header, HeaderOp, Hooks, Message, MessageAction, Metric, MetricKind, Reject,
    RequestAction, RequestInfo, ResponseAction, ResponseInfo, StatusOverride,
};
pub use v2::{Interceptor, InterceptorPre};
