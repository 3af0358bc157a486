//! Assembles a running gateway from a validated [`Config`]: shared upstream state, one worker
//! per core (own runtime, own upstream connections), an acceptor per listener dealing
//! connections to the workers, the admin listener, graceful shutdown, and reloading the
//! config while serving ([`reload`]).

mod build;
mod listener;
mod live;
mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::admin::{self, AdminState, AdminView};
use crate::config::{Config, ListenerConfig};
use crate::server::{self, worker};
use crate::telemetry::Registry;
use crate::upstream::Upstream;

use build::Groups;
use listener::LiveListener;
use live::{lock, Live};

pub use reload::Reloader;

/// A gateway whose sockets are bound but which serves nothing yet.
pub struct Gateway {
    config: Config,
    listeners: Vec<(ListenerConfig, std::net::TcpListener)>,
    admin: Option<std::net::TcpListener>,
    source: Option<PathBuf>,
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
            source: None,
        })
    }

    /// The file the config came from: SIGHUP (through [`Running::reloader`]), admin
    /// `POST /reload` and, with `reload.watch`, a change to the file reload it.
    pub fn with_source(mut self, path: PathBuf) -> Gateway {
        self.source = Some(path);
        self
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
        let n = self.config.runtime.worker_count();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(false);
        let registry = Registry::new();
        crate::proxy::HeldStreams::register(&registry);
        let groups: Groups = self
            .config
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), build::new_group(u, n)?)))
            .collect::<anyhow::Result<_>>()?;
        let mut servings = Vec::new();
        for (c, _) in &self.listeners {
            servings.push(build::listener_serving(c, &groups, &registry, n)?);
        }
        let workers = (0..n)
            .map(|i| worker::spawn(i, exit_rx.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        for g in groups.values() {
            build::start_group(g, &workers, &stop_rx, &exit_rx);
        }
        let admin_state = Arc::new(AdminState::new(
            AdminView {
                config_yaml: serde_yaml::to_string(&self.config).unwrap_or_default(),
                upstreams: groups.values().cloned().collect(),
            },
            registry.clone(),
        ));
        let mut listeners = Vec::new();
        for ((cfg, sock), serving) in self.listeners.into_iter().zip(servings) {
            listeners.push(LiveListener::start(cfg, sock, serving, &workers)?);
        }
        admin_state.listening.store(true, Ordering::Relaxed);
        if let Some(sock) = self.admin {
            let sock = tokio::net::TcpListener::from_std(sock)?;
            tracing::info!(addr = %sock.local_addr()?, "admin listening");
            tokio::spawn(admin::serve(sock, admin_state.clone(), stop_rx.clone()));
        }
        let live = Arc::new(Mutex::new(Live {
            config: self.config,
            workers,
            groups,
            listeners,
            registry,
            admin: admin_state.clone(),
            stop: stop_rx,
            exit: exit_rx,
        }));
        let reloader = self
            .source
            .map(|path| Reloader::start(live.clone(), path, admin_state.clone()));
        Ok(Running {
            live,
            stop: stop_tx,
            exit: exit_tx,
            admin: admin_state,
            reloader,
        })
    }
}

/// A serving gateway. Dropping it stops everything at once; [`Running::shutdown`] drains.
pub struct Running {
    live: Arc<Mutex<Live>>,
    stop: watch::Sender<bool>,
    exit: watch::Sender<bool>,
    admin: Arc<AdminState>,
    reloader: Option<Reloader>,
}

impl Running {
    /// Ready as `/readyz` says.
    pub fn readiness(&self) -> Result<(), String> {
        self.admin.readiness()
    }

    /// The first worker's instance of the upstream group `name` (for inspection: endpoints,
    /// pools, load; load and health are shared by all workers, pools are per worker).
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstream_instances(name).into_iter().next()
    }

    /// Every worker's instance of the upstream group `name`.
    pub fn upstream_instances(&self, name: &str) -> Vec<Arc<Upstream>> {
        lock(&self.live)
            .groups
            .get(name)
            .map(|g| g.instances())
            .unwrap_or_default()
    }

    /// Client connections open now, over all listeners.
    pub fn open_connections(&self) -> usize {
        lock(&self.live).listeners.iter().map(|l| l.open()).sum()
    }

    /// The address each listener serves on now, by name.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        lock(&self.live)
            .listeners
            .iter()
            .map(|l| (l.cfg.name.clone(), l.addr))
            .collect()
    }

    /// Reloads the config file the gateway was started from (see [`Gateway::with_source`]):
    /// a summary of what changed, or why the file was refused (the running config stays).
    pub async fn reload(&self) -> Result<String, String> {
        match &self.reloader {
            Some(r) => r.reload().await,
            None => Err("this gateway was not started from a config file".into()),
        }
    }

    /// A handle that reloads the config (for a SIGHUP handler), when there is a source file.
    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader.clone()
    }

    /// Stops accepting, sends GOAWAY on every client connection, and waits up to the longest
    /// `drain_timeout` for in-flight calls to finish; then the workers end. Returns true when
    /// all calls finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin.listening.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let (drain, budgets) = {
            let mut live = lock(&self.live);
            let mut drain = Duration::ZERO;
            let mut budgets = Vec::new();
            for l in &live.listeners {
                l.stop();
                drain = drain.max(l.cfg.drain_timeout.0);
                budgets.push(l.budget());
            }
            // The workers end their accept queues once every sender is gone.
            live.listeners.clear();
            for w in &mut live.workers {
                w.close_queue();
            }
            (drain, budgets)
        };
        let all = futures_util::future::join_all(budgets.iter().map(|c| c.closed()));
        let drained = tokio::time::timeout(drain, all).await.is_ok();
        let _ = self.exit.send(true);
        drained
    }
}
