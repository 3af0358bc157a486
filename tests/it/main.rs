//! The integration tests: one binary (wasmtime is linked once), a module per area, and one
//! `support` they share. Every test talks real gRPC over real sockets on 127.0.0.1 — tonic and
//! Python grpcio clients and servers, a real `redis-server`, real components built from
//! `plugins/` — against the gateway in-process or the real `synapsor` binary.
//!
//! Run one area with `cargo test --test it hostile::`.

mod support;

mod balancing;
mod callout_examples;
mod cli;
mod deadlines;
mod deployments;
mod discovery;
mod failures;
mod faults;
mod forwarding;
mod health;
mod hostile;
mod interop_grpcio;
mod jwt;
mod layering;
mod listener;
mod malformed;
mod message_examples;
mod outlier;
mod plugin_callouts;
mod plugin_io_safety;
mod plugin_languages;
mod plugin_loading;
mod plugin_messages;
mod plugin_safety;
mod plugin_state;
mod plugins;
mod pool;
mod reload;
mod shared_limit;
mod stages;
mod tls;
mod upstream_errors;
