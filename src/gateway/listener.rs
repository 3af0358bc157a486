//! A listener as it runs: its socket, one slot per worker, its connection budget, and the
//! signals that stop its acceptor and drain its connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ListenerConfig;
use crate::server::worker::Worker;
use crate::server::{self, Connections, ListenerSlot, Serving};

/// A running listener.
pub struct LiveListener {
    /// Its config as last applied.
    pub cfg: ListenerConfig,
    /// The address it is bound to.
    pub addr: SocketAddr,
    slots: Vec<Arc<ListenerSlot>>,
    socket: Arc<tokio::net::TcpListener>,
    conns: Arc<Connections>,
    /// Ends the acceptor.
    accept_stop: watch::Sender<bool>,
    /// GOAWAY to every connection accepted so far.
    conn_stop: watch::Sender<bool>,
}

impl LiveListener {
    /// Starts accepting on `sock` for `cfg`, serving with `serving` (one per worker).
    pub fn start(
        cfg: ListenerConfig,
        sock: std::net::TcpListener,
        serving: Vec<Serving>,
        workers: &[Worker],
    ) -> std::io::Result<LiveListener> {
        let socket = Arc::new(tokio::net::TcpListener::from_std(sock)?);
        let addr = socket.local_addr()?;
        let slots = serving
            .into_iter()
            .map(|s| ListenerSlot::new(&cfg.name, s))
            .collect();
        let mut l = LiveListener {
            conns: Connections::new(cfg.max_connections),
            cfg,
            addr,
            slots,
            socket,
            accept_stop: watch::channel(false).0,
            conn_stop: watch::channel(false).0,
        };
        l.spawn_acceptor(workers);
        tracing::info!(listener = %l.cfg.name, %addr,
            upstream = l.cfg.upstream.as_deref().unwrap_or("-"), routes = l.cfg.routes.len(),
            workers = workers.len(), "listening");
        Ok(l)
    }

    fn spawn_acceptor(&mut self, workers: &[Worker]) {
        let (tx, rx) = watch::channel(false);
        let _ = self.accept_stop.send(true);
        self.accept_stop = tx;
        tokio::spawn(server::accept_loop(
            self.socket.clone(),
            self.slots.clone(),
            workers.iter().filter_map(Worker::queue).collect(),
            self.conns.clone(),
            rx,
            self.conn_stop.subscribe(),
        ));
    }

    /// Applies a changed config on the same address: new streams get `serving` (a changed
    /// stack or settings); a changed `max_connections` budgets connections accepted from now
    /// on. Connections already open stay open.
    pub fn update(&mut self, cfg: ListenerConfig, serving: Vec<Serving>, workers: &[Worker]) {
        for (slot, s) in self.slots.iter().zip(serving) {
            slot.set(s);
        }
        if cfg.max_connections != self.cfg.max_connections {
            self.conns = Connections::new(cfg.max_connections);
            self.cfg = cfg;
            self.spawn_acceptor(workers);
        } else {
            self.cfg = cfg;
        }
    }

    /// What a worker serves now.
    pub fn serving(&self, worker: usize) -> Arc<Serving> {
        self.slots[worker].current()
    }

    /// Stops accepting and sends GOAWAY to every connection; calls in flight finish.
    pub fn stop(&self) {
        let _ = self.accept_stop.send(true);
        let _ = self.conn_stop.send(true);
        tracing::info!(listener = %self.cfg.name, addr = %self.addr, "listener stopped; draining");
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.open()
    }

    /// The connection budget (all back = every connection closed).
    pub fn budget(&self) -> Arc<Connections> {
        self.conns.clone()
    }
}
