//! What a plugin's callouts are sent through ([`Callee`]: an upstream group, through the
//! gateway's balancer, pools, TLS and health state) and which worker the running code is on
//! ([`worker`]). They live at the bottom of the request path so the plugin host can name them
//! without importing the forwarder; the gateway assembly implements [`Callee`] over the proxy.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

use super::body::Body;
use crate::error::BoxError;

/// `stack::Request` and `stack::Response`, named here without importing `stack/mod.rs` (which
/// re-exports this file).
type Request = http::Request<Body>;
type Response = http::Response<Body>;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the calling thread as worker `index`'s (once, when the worker's thread starts).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// The index of the worker whose thread this is; `None` on any other thread.
pub fn worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// The future of one call through a [`Callee`]: the response head, its body still streaming.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

/// An upstream group a plugin may call out to.
pub trait Callee: Send + Sync {
    /// The call `req` (a gRPC request head and body) through worker `worker`'s pools of the
    /// group (taken modulo the number of workers), as a client's call is forwarded: balancer,
    /// retries of streams that never started, `grpc-timeout`. Errors are the forwarder's
    /// (no endpoint, connection failed, deadline).
    fn call(&self, worker: usize, req: Request) -> CallFuture;

    /// The runtime of worker `worker`, where its pools' connections run and where the call
    /// should be driven (`None` before the gateway started the group).
    fn runtime(&self, worker: usize) -> Option<tokio::runtime::Handle>;
}
