//! Workers: one thread per core, each with its own current-thread tokio runtime, its own
//! upstream connections, and the client connections the acceptors deal it. Nothing on the
//! per-call path crosses threads; what workers share (endpoint load, health, the balancer's
//! counters) is atomics.

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::{serve_conn, Incoming};

/// Most accepted connections queued for one worker before the acceptor waits.
pub const QUEUE: usize = 256;

/// A started worker.
pub struct Worker {
    /// Where the acceptors send it connections (`None` once closed).
    incoming: Option<mpsc::Sender<Incoming>>,
    /// Its runtime, for the tasks that must run there (pool maintenance).
    pub runtime: Handle,
}

/// Starts worker `index`'s thread and runtime; returns once the runtime runs. The worker
/// serves connections until every sender of its queue is gone, then waits for `exit` to turn
/// true (or close).
pub fn spawn(index: usize, mut exit: watch::Receiver<bool>) -> std::io::Result<Worker> {
    let (tx, mut rx) = mpsc::channel::<Incoming>(QUEUE);
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    // The thread is detached: it ends when its runtime has nothing left to serve.
    std::thread::Builder::new()
        .name(format!("synapsor-w{index}"))
        .spawn(move || {
            crate::stack::set_worker(index);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("worker runtime");
            let _ = handle_tx.send(rt.handle().clone());
            rt.block_on(async move {
                while let Some(incoming) = rx.recv().await {
                    tokio::spawn(serve_conn(incoming));
                }
                // The acceptors have stopped: connections drain on their own; wait for the
                // word to exit.
                while !*exit.borrow_and_update() {
                    if exit.changed().await.is_err() {
                        break;
                    }
                }
            });
            // Dropping the runtime ends whatever is left (calls past the drain timeout).
        })?;
    let runtime = handle_rx
        .recv()
        .map_err(|_| std::io::Error::other("worker runtime failed to start"))?;
    Ok(Worker {
        incoming: Some(tx),
        runtime,
    })
}

impl Worker {
    /// A sender into the worker's accept queue (`None` after [`Worker::close_queue`]).
    pub fn queue(&self) -> Option<mpsc::Sender<Incoming>> {
        self.incoming.clone()
    }

    /// Drops this handle's sender: once the acceptors' are gone too, the worker stops taking
    /// connections and waits for the word to exit.
    pub fn close_queue(&mut self) {
        self.incoming = None;
    }
}
