//! Workers: one thread per core, each with its own current-thread tokio runtime, its own
//! upstream connections, and the client connections the acceptors deal it. Nothing on the
//! per-call path crosses threads; what workers share (endpoint load, health, the balancer's
//! counters) is atomics.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{serve_conn, Incoming, ListenerSettings};
use crate::interceptor::Stack;
use crate::upstream::Upstream;

/// Most accepted connections queued for one worker before the acceptor waits.
pub const QUEUE: usize = 256;

/// Everything a worker serves.
pub struct WorkerPlan {
    /// Index, for the thread name.
    pub index: usize,
    /// One proxy per listener, in config order, routing to this worker's upstreams.
    pub listeners: Vec<(Arc<str>, Stack, Arc<ListenerSettings>)>,
    /// This worker's upstream groups (own pools over shared balancing state).
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Connections from the acceptors.
    pub incoming: mpsc::Receiver<Incoming>,
    /// Turns true when the gateway stops accepting (drain begins).
    pub stop: watch::Receiver<bool>,
    /// Turns true (or closes) when the worker should end, in-flight calls or not.
    pub exit: watch::Receiver<bool>,
}

/// Starts the worker's thread and runtime; returns at once.
pub fn spawn(plan: WorkerPlan) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("synapsor-w{}", plan.index))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("worker runtime");
            rt.block_on(run(plan));
            // Dropping the runtime ends whatever is left (calls past the drain timeout).
        })
}

async fn run(mut plan: WorkerPlan) {
    for up in plan.upstreams.values() {
        up.start(&plan.exit);
    }
    while let Some(incoming) = plan.incoming.recv().await {
        let Some((name, stack, settings)) = plan.listeners.get(incoming.listener) else {
            continue;
        };
        tokio::spawn(serve_conn(
            incoming,
            name.clone(),
            stack.clone(),
            settings.clone(),
            plan.stop.clone(),
        ));
    }
    // The acceptors have stopped: connections drain on their own; wait for the word to exit.
    while !*plan.exit.borrow_and_update() {
        if plan.exit.changed().await.is_err() {
            break;
        }
    }
}
