//! An upstream group: its endpoints, its balancer, its timeouts. The group's shared state
//! ([`UpstreamGroup`]: endpoint load, health, outlier state, the balancer) is built once and
//! shared by every worker; each worker gets its own [`Upstream`] with its own connection pools
//! over that state. A reload or a DNS change swaps a new member list into every worker's
//! `Upstream` at once: endpoints that stay keep their state and connections, new ones start
//! dialling, removed ones drain (their calls in flight finish, then their connections close).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::balance::Balancer;
use crate::config::UpstreamConfig;
use crate::discovery::{self, Resolved};
use crate::endpoint::{Endpoint, EndpointState};
use crate::outlier::Outlier;
use crate::pool::{self, Pool, PoolSettings, UpstreamShared};
use crate::tls::ClientTls;

/// What the workers share about an upstream group.
pub struct UpstreamGroup {
    name: Arc<str>,
    inner: Mutex<GroupInner>,
    /// Turns true when the group leaves the config.
    retired: watch::Sender<bool>,
}

struct GroupInner {
    cfg: UpstreamConfig,
    /// What each `dns://` endpoint last resolved to.
    resolved: Resolved,
    /// Current members: address as dialled, and shared state.
    members: Vec<(String, Arc<EndpointState>)>,
    balancer: Arc<Balancer>,
    settings: PoolSettings,
    shared: Arc<UpstreamShared>,
    outlier: Option<Arc<Outlier>>,
    tls: Option<Arc<ClientTls>>,
    instances: Vec<Arc<Upstream>>,
    /// Dropping it stops the current health checkers.
    health_stop: Option<watch::Sender<bool>>,
    /// The gateway's stop signal, once health checks started.
    stop: Option<watch::Receiver<bool>>,
}

impl UpstreamGroup {
    /// The group's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Each endpoint's address and shared state (load, health), as of now.
    pub fn endpoints(&self) -> Vec<(String, Arc<EndpointState>)> {
        self.lock().members.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared state of the group described by `cfg`, whose `dns://` endpoints resolved
    /// as `resolved` says, with its TLS (loaded from `cfg.tls`) when it has any.
    pub fn new(
        cfg: &UpstreamConfig,
        resolved: Resolved,
        tls: Option<Arc<ClientTls>>,
    ) -> Arc<UpstreamGroup> {
        let specs = discovery::expand(cfg, &resolved);
        let mut settings = PoolSettings::from_config(&cfg.pool);
        settings.tls = tls.clone();
        let members: Vec<_> = specs
            .iter()
            .map(|e| {
                let st = Arc::new(EndpointState::new(e));
                st.set_slow_start(cfg.slow_start.0);
                (e.address.clone(), st)
            })
            .collect();
        Arc::new(UpstreamGroup {
            name: cfg.name.as_str().into(),
            retired: watch::channel(false).0,
            inner: Mutex::new(GroupInner {
                resolved,
                balancer: Arc::new(Balancer::new(cfg.balance, &weights(&members))),
                shared: UpstreamShared::new(&cfg.name, settings.keepalive_time),
                outlier: cfg
                    .outlier_detection
                    .as_ref()
                    .map(|o| Outlier::new(&cfg.name, o)),
                settings,
                tls,
                cfg: cfg.clone(),
                members,
                instances: Vec::new(),
                health_stop: None,
                stop: None,
            }),
        })
    }

    /// One worker's view: the shared state with a fresh pool per endpoint.
    pub fn instantiate(&self) -> Arc<Upstream> {
        let mut g = self.lock();
        let endpoints = g
            .members
            .iter()
            .map(|(addr, state)| new_endpoint(&g, addr, state))
            .collect();
        let up = Arc::new(Upstream {
            name: self.name.clone(),
            members: ArcSwap::from_pointee(g.view(endpoints)),
            runner: Mutex::new(None),
        });
        g.instances.push(up.clone());
        up
    }

    /// Every worker's view.
    pub fn instances(&self) -> Vec<Arc<Upstream>> {
        self.lock().instances.clone()
    }

    /// (Re)starts the group's active health checks on the current runtime (none when the
    /// config has none); they also end when `stop` turns true.
    pub fn start_health(&self, stop: &watch::Receiver<bool>) {
        let mut g = self.lock();
        g.stop = Some(stop.clone());
        g.restart_health(&self.name);
    }

    /// The `dns://` endpoints to resolve, and how often.
    pub fn dns_plan(&self) -> (Vec<String>, Duration) {
        let g = self.lock();
        (discovery::dns_names(&g.cfg), g.cfg.resolve_interval.0)
    }

    /// Turns true when the group retires.
    pub fn retired(&self) -> watch::Receiver<bool> {
        self.retired.subscribe()
    }

    /// Applies fresh lookups of `dns://` endpoints (names missing from `fresh` keep their
    /// addresses).
    pub fn apply_dns(&self, fresh: Resolved) {
        let (cfg, tls) = {
            let g = self.lock();
            (g.cfg.clone(), g.tls.clone())
        };
        self.update(&cfg, fresh, tls);
    }

    /// Applies a new config to the running group (`fresh`: new lookups of its `dns://`
    /// endpoints; names missing from it keep their last addresses): endpoints that stay keep
    /// their state and pools (weights updated), new ones join (slow-starting), removed ones
    /// drain. Returns whether the member list or its settings changed.
    pub fn update(
        &self,
        cfg: &UpstreamConfig,
        fresh: Resolved,
        tls: Option<Arc<ClientTls>>,
    ) -> bool {
        let mut g = self.lock();
        let names = discovery::dns_names(cfg);
        g.resolved.retain(|k, _| names.contains(k));
        for (k, v) in fresh {
            if g.resolved.get(&k) != Some(&v) {
                tracing::info!(upstream = %self.name, endpoint = %k, addresses = v.len(),
                    "DNS endpoint resolves to a new address set");
            }
            g.resolved.insert(k, v);
        }
        let specs = &discovery::expand(cfg, &g.resolved);
        let pool_changed = g.cfg.pool != cfg.pool || g.cfg.tls != cfg.tls;
        let same_members = g.members.len() == specs.len()
            && g.members
                .iter()
                .zip(specs)
                .all(|((a, st), s)| *a == s.address && st.weight() == s.weight);
        let mut shape = g.cfg.clone();
        shape.endpoints = cfg.endpoints.clone();
        let same_cfg = serde_yaml::to_string(&shape).ok() == serde_yaml::to_string(cfg).ok();
        if same_members && same_cfg {
            return false;
        }
        if pool_changed {
            g.tls = tls;
            g.settings = PoolSettings::from_config(&cfg.pool);
            g.settings.tls = g.tls.clone();
            g.shared = UpstreamShared::new(&cfg.name, g.settings.keepalive_time);
        }
        let now = crate::clock::now_ms();
        let members: Vec<(String, Arc<EndpointState>)> = specs
            .iter()
            .map(|s| {
                let st = match g.members.iter().find(|(a, _)| *a == s.address) {
                    Some((_, st)) => st.clone(),
                    None => {
                        let st = Arc::new(EndpointState::new(s));
                        st.set_slow_start(cfg.slow_start.0);
                        st.ramp_from(now);
                        st
                    }
                };
                st.set_weight(s.weight);
                st.set_slow_start(cfg.slow_start.0);
                (s.address.clone(), st)
            })
            .collect();
        if g.cfg.balance != cfg.balance || !same_members {
            g.balancer = Arc::new(Balancer::new(cfg.balance, &weights(&members)));
        }
        if g.cfg.outlier_detection != cfg.outlier_detection {
            g.outlier = cfg
                .outlier_detection
                .as_ref()
                .map(|o| Outlier::new(&cfg.name, o));
        }
        let health_changed =
            g.cfg.health_check != cfg.health_check || !same_members || pool_changed;
        g.cfg = cfg.clone();
        g.members = members;
        for up in g.instances.clone() {
            let old = up.members();
            let endpoints: Vec<Arc<Endpoint>> = g
                .members
                .iter()
                .map(
                    |(addr, st)| match old.endpoints.iter().find(|e| Arc::ptr_eq(&e.state, st)) {
                        Some(e) if !pool_changed => e.clone(),
                        _ => new_endpoint(&g, addr, st),
                    },
                )
                .collect();
            let kept = |e: &Arc<Endpoint>| endpoints.iter().any(|n| Arc::ptr_eq(n, e));
            let removed: Vec<_> = old.endpoints.iter().filter(|e| !kept(e)).cloned().collect();
            let added: Vec<_> = endpoints
                .iter()
                .filter(|e| !old.endpoints.iter().any(|o| Arc::ptr_eq(o, e)))
                .cloned()
                .collect();
            up.replace(g.view(endpoints), &added, &removed);
        }
        if health_changed {
            g.restart_health(&self.name);
        }
        true
    }

    /// Takes the group out of service: every endpoint drains, health checks stop.
    pub fn retire(&self) {
        let _ = self.retired.send(true);
        let mut g = self.lock();
        g.health_stop = None;
        for up in &g.instances {
            for ep in &up.members().endpoints {
                ep.pool.retire();
            }
        }
        g.instances.clear();
    }
}

fn weights(members: &[(String, Arc<EndpointState>)]) -> Vec<u32> {
    members.iter().map(|(_, s)| s.weight()).collect()
}

fn new_endpoint(g: &GroupInner, addr: &str, state: &Arc<EndpointState>) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        state: state.clone(),
        pool: Pool::new(g.settings.clone(), g.shared.clone(), addr),
    })
}

impl GroupInner {
    fn restart_health(&mut self, name: &Arc<str>) {
        self.health_stop = None; // ends the old checkers
        let (Some(h), Some(stop)) = (self.cfg.health_check.clone(), self.stop.clone()) else {
            return;
        };
        let (tx, rx) = watch::channel(false);
        crate::health::spawn(name, &self.members, &h, self.tls.clone(), stop, rx);
        self.health_stop = Some(tx);
    }

    fn view(&self, endpoints: Vec<Arc<Endpoint>>) -> Members {
        Members {
            endpoints,
            balancer: self.balancer.clone(),
            request_timeout: self.cfg.request_timeout.nonzero(),
            backoff_max: self.settings.backoff_max,
            shared: self.shared.clone(),
            outlier: self.outlier.clone(),
            min_connections: self.settings.min,
        }
    }
}

/// A group's members and settings as of the last reload; a call keeps the one it started with.
pub struct Members {
    /// The endpoints, in configuration order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How an endpoint is picked (shared by all workers).
    pub balancer: Arc<Balancer>,
    /// Longest wait for response headers.
    pub request_timeout: Option<Duration>,
    /// Backoff cap after connect failures.
    pub backoff_max: Duration,
    /// State shared by the group's pools (the current keepalive interval).
    pub shared: Arc<UpstreamShared>,
    /// Passive outlier detection, when configured.
    pub outlier: Option<Arc<Outlier>>,
    min_connections: usize,
}

/// A named group of endpoints, as one worker uses it.
pub struct Upstream {
    /// The group's name.
    pub name: Arc<str>,
    members: ArcSwap<Members>,
    /// The worker's runtime and exit signal, once started: new endpoints' pools are
    /// maintained there.
    runner: Mutex<Option<(Handle, watch::Receiver<bool>)>>,
}

impl Upstream {
    /// A group used by a single worker (builds its shared state too).
    pub fn new(cfg: &UpstreamConfig) -> Arc<Upstream> {
        UpstreamGroup::new(cfg, Resolved::new(), None).instantiate()
    }

    /// The current members and settings.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Starts each endpoint's pool maintenance (dials `min_connections`) on runtime `rt` (the
    /// worker's); it runs until `stop` changes or the endpoint leaves the group. Endpoints
    /// that join later are maintained there too.
    pub fn start(&self, rt: &Handle, stop: &watch::Receiver<bool>) {
        let mut runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        for ep in &self.members().endpoints {
            rt.spawn(pool::maintain(ep.clone(), stop.clone()));
        }
        *runner = Some((rt.clone(), stop.clone()));
    }

    fn replace(&self, members: Members, added: &[Arc<Endpoint>], removed: &[Arc<Endpoint>]) {
        let runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        self.members.store(Arc::new(members));
        if let Some((rt, stop)) = &*runner {
            for ep in added {
                rt.spawn(pool::maintain(ep.clone(), stop.clone()));
            }
        }
        for ep in removed {
            ep.pool.retire();
        }
    }

    /// True when some endpoint has an open connection — or, for pools that keep none open
    /// (`min_connections: 0`), when some endpoint is in rotation without failures.
    pub fn connected(&self) -> bool {
        let m = self.members();
        m.endpoints.iter().any(|e| {
            e.pool.open_connections() > 0
                || (m.min_connections == 0 && e.available() && e.failures() == 0)
        })
    }
}
