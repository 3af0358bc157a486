//! Assembles a running gateway from a validated [`Config`]: shared upstream state, one worker
//! per core (own runtime, own upstream connections), an acceptor per listener dealing
//! connections to the workers, the admin listener, and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, AdminState};
use crate::config::{Config, ListenerConfig};
use crate::interceptor::{Registry, Stages};
use crate::proxy::Forward;
use crate::route::Router;
use crate::server::worker::{self, WorkerPlan};
use crate::server::{self, Connections, ListenerSettings};
use crate::upstream::{Upstream, UpstreamGroup};

/// A gateway whose sockets are bound but which serves nothing yet.
pub struct Gateway {
    config: Config,
    listeners: Vec<(ListenerConfig, std::net::TcpListener)>,
    admin: Option<std::net::TcpListener>,
}

impl Gateway {
    /// Binds every socket; errors name the listener. Needs no runtime.
    pub async fn bind(config: Config) -> anyhow::Result<Gateway> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let sock = server::bind(l.listen)
                .with_context(|| format!("listener {:?}: cannot listen on {}", l.name, l.listen))?;
            listeners.push((l.clone(), sock));
        }
        let admin = if config.admin.enabled {
            Some(
                server::bind(config.admin.listen)
                    .with_context(|| format!("admin: cannot listen on {}", config.admin.listen))?,
            )
        } else {
            None
        };
        Ok(Gateway {
            config,
            listeners,
            admin,
        })
    }

    /// The bound address of each listener, by name.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|(c, l)| (c.name.clone(), l.local_addr().expect("bound")))
            .collect()
    }

    /// The admin listener's address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|l| l.local_addr().expect("bound"))
    }

    /// Starts serving: worker threads start (their pools dial their minimum), and the
    /// acceptors and the admin listener run on the calling tokio runtime. Returns at once.
    pub fn start(self) -> anyhow::Result<Running> {
        let workers = self.config.runtime.worker_count();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(false);
        let groups: Vec<(String, Arc<UpstreamGroup>)> = self
            .config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), UpstreamGroup::new(u)))
            .collect();
        for (u, (_, g)) in self.config.upstreams.iter().zip(&groups) {
            if let Some(h) = &u.health_check {
                crate::health::spawn(g, h, &stop_rx);
            }
        }
        let settings: Vec<Arc<ListenerSettings>> = self
            .listeners
            .iter()
            .map(|(c, _)| Arc::new(ListenerSettings::from_config(c)))
            .collect();
        let registry = Registry::new();
        let stages: Vec<Stages> = self
            .listeners
            .iter()
            .map(|(c, _)| {
                Stages::new(&c.interceptors, &c.name, &registry)
                    .map_err(|e| anyhow::anyhow!("listener {:?}: {e}", c.name))
            })
            .collect::<anyhow::Result<_>>()?;
        let route_stages: Vec<Vec<Stages>> = self
            .listeners
            .iter()
            .map(|(c, _)| {
                c.routes
                    .iter()
                    .enumerate()
                    .map(|(r, route)| {
                        Stages::new(&route.interceptors, &c.name, &registry)
                            .map_err(|e| anyhow::anyhow!("listener {:?}: routes[{r}].{e}", c.name))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<_>>()?;
        let mut instances: HashMap<String, Vec<Arc<Upstream>>> = HashMap::new();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for index in 0..workers {
            let upstreams: HashMap<String, Arc<Upstream>> = groups
                .iter()
                .map(|(n, g)| (n.clone(), g.instantiate()))
                .collect();
            for (n, u) in &upstreams {
                instances.entry(n.clone()).or_default().push(u.clone());
            }
            let listeners = self
                .listeners
                .iter()
                .zip(&settings)
                .zip(&stages)
                .enumerate()
                .map(|(li, (((cfg, _), s), stages))| {
                    let router = Router::new(&cfg.routes, cfg.upstream.as_deref(), |name| {
                        upstreams[name].clone()
                    });
                    let name: Arc<str> = cfg.name.as_str().into();
                    let forward = Forward::new(router, &route_stages[li]);
                    (name, stages.around(forward), s.clone())
                })
                .collect();
            let (tx, rx) = mpsc::channel(worker::QUEUE);
            senders.push(tx);
            threads.push(worker::spawn(WorkerPlan {
                index,
                listeners,
                upstreams,
                incoming: rx,
                stop: stop_rx.clone(),
                exit: exit_rx.clone(),
            })?);
        }
        let mut names: Vec<String> = self
            .config
            .upstreams
            .iter()
            .map(|u| u.name.clone())
            .collect();
        names.dedup();
        let admin_state = Arc::new(AdminState {
            config_yaml: serde_yaml::to_string(&self.config).unwrap_or_default(),
            upstreams: names
                .iter()
                .map(|n| (n.clone(), instances[n].clone()))
                .collect(),
            listening: Default::default(),
            metrics: registry.clone(),
        });
        let mut conns_all = Vec::new();
        let mut drain = Duration::ZERO;
        for (index, ((cfg, sock), s)) in self.listeners.into_iter().zip(&settings).enumerate() {
            let conns = Connections::new(s.max_connections);
            tracing::info!(listener = %cfg.name, addr = %sock.local_addr().expect("bound"),
                upstream = cfg.upstream.as_deref().unwrap_or("-"), routes = cfg.routes.len(),
                workers, "listening");
            drain = drain.max(cfg.drain_timeout.0);
            tokio::spawn(server::accept_loop(
                sock,
                index,
                cfg.name.as_str().into(),
                senders.clone(),
                conns.clone(),
                stop_rx.clone(),
            ));
            conns_all.push(conns);
        }
        drop(senders);
        admin_state.listening.store(true, Ordering::Relaxed);
        if let Some(sock) = self.admin {
            let sock = tokio::net::TcpListener::from_std(sock)?;
            tracing::info!(addr = %sock.local_addr()?, "admin listening");
            tokio::spawn(admin::serve(sock, admin_state.clone(), stop_rx.clone()));
        }
        Ok(Running {
            upstreams: instances,
            stop: stop_tx,
            exit: exit_tx,
            listeners: conns_all,
            drain,
            admin: admin_state,
            _threads: threads,
        })
    }
}

/// A serving gateway. Dropping it stops everything at once; [`Running::shutdown`] drains.
pub struct Running {
    upstreams: HashMap<String, Vec<Arc<Upstream>>>,
    stop: watch::Sender<bool>,
    exit: watch::Sender<bool>,
    listeners: Vec<Arc<Connections>>,
    drain: Duration,
    admin: Arc<AdminState>,
    _threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Ready as `/readyz` says.
    pub fn readiness(&self) -> Result<(), String> {
        self.admin.readiness()
    }

    /// The first worker's instance of the upstream group `name` (for inspection: endpoints,
    /// pools, load; load and health are shared by all workers, pools are per worker).
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(name).and_then(|v| v.first().cloned())
    }

    /// Every worker's instance of the upstream group `name`.
    pub fn upstream_instances(&self, name: &str) -> Vec<Arc<Upstream>> {
        self.upstreams.get(name).cloned().unwrap_or_default()
    }

    /// Client connections open now, over all listeners.
    pub fn open_connections(&self) -> usize {
        self.listeners.iter().map(|c| c.open()).sum()
    }

    /// Stops accepting, sends GOAWAY on every client connection, and waits up to the longest
    /// `drain_timeout` for in-flight calls to finish; then the workers end. Returns true when
    /// all calls finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin.listening.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.listeners.iter().map(|c| c.closed()));
        let drained = tokio::time::timeout(self.drain, all).await.is_ok();
        let _ = self.exit.send(true);
        drained
    }
}
