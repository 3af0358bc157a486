//! Assembles a running gateway from a validated [`Config`]: upstream groups with their pools,
//! one listener per entry, the admin listener, and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::{Config, ListenerConfig};
use crate::proxy::Proxy;
use crate::route::Router;
use crate::server::{self, Connections, ListenerSettings};
use crate::upstream::Upstream;

/// A gateway whose sockets are bound but which serves nothing yet.
pub struct Gateway {
    config: Config,
    upstreams: HashMap<String, Arc<Upstream>>,
    listeners: Vec<(ListenerConfig, TcpListener)>,
    admin: Option<TcpListener>,
}

impl Gateway {
    /// Builds the upstream groups and binds every socket; errors name the listener.
    pub async fn bind(config: Config) -> anyhow::Result<Gateway> {
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), Upstream::new(u)))
            .collect();
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
            upstreams,
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

    /// Starts serving: pools dial their minimum, listeners accept. Returns at once.
    pub fn start(self) -> Running {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut upstream_list: Vec<Arc<Upstream>> = Vec::new();
        for u in &self.config.upstreams {
            let up = self.upstreams[&u.name].clone();
            up.start(&stop_rx);
            upstream_list.push(up);
        }
        let admin_state = Arc::new(AdminState {
            config_yaml: serde_yaml::to_string(&self.config).unwrap_or_default(),
            upstreams: upstream_list,
            listening: Default::default(),
        });
        let mut listeners = Vec::new();
        let mut drain = Duration::ZERO;
        for (cfg, sock) in self.listeners {
            let router = Router::new(&cfg.routes, cfg.upstream.as_deref(), |name| {
                self.upstreams[name].clone()
            });
            let proxy = Arc::new(Proxy {
                listener: cfg.name.as_str().into(),
                router,
            });
            let settings = ListenerSettings::from_config(&cfg);
            let conns = Connections::new(settings.max_connections);
            tracing::info!(listener = %cfg.name, addr = %sock.local_addr().expect("bound"),
                upstream = cfg.upstream.as_deref().unwrap_or("-"), routes = cfg.routes.len(),
                "listening");
            drain = drain.max(cfg.drain_timeout.0);
            tokio::spawn(server::serve(
                sock,
                proxy,
                settings,
                conns.clone(),
                stop_rx.clone(),
            ));
            listeners.push(conns);
        }
        admin_state.listening.store(true, Ordering::Relaxed);
        if let Some(sock) = self.admin {
            tracing::info!(addr = %sock.local_addr().expect("bound"), "admin listening");
            tokio::spawn(admin::serve(sock, admin_state.clone(), stop_rx.clone()));
        }
        Running {
            upstreams: self.upstreams,
            stop: stop_tx,
            listeners,
            drain,
            admin: admin_state,
        }
    }
}

/// A serving gateway.
pub struct Running {
    upstreams: HashMap<String, Arc<Upstream>>,
    stop: watch::Sender<bool>,
    listeners: Vec<Arc<Connections>>,
    drain: Duration,
    admin: Arc<AdminState>,
}

impl Running {
    /// Ready as `/readyz` says.
    pub fn readiness(&self) -> Result<(), String> {
        self.admin.readiness()
    }

    /// The upstream group named `name` (for inspection: endpoints, pools, load).
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(name).cloned()
    }

    /// Client connections open now, over all listeners.
    pub fn open_connections(&self) -> usize {
        self.listeners.iter().map(|c| c.open()).sum()
    }

    /// Stops accepting, sends GOAWAY on every client connection, and waits up to the longest
    /// `drain_timeout` for in-flight calls to finish. Returns true when all finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin.listening.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.listeners.iter().map(|c| c.closed()));
        tokio::time::timeout(self.drain, all).await.is_ok()
    }
}
