//! An upstream group: its endpoints, its balancer, its timeouts. The group's shared state
//! ([`UpstreamGroup`]: endpoint load, health, outlier state, the balancer) is built once and
//! shared by every worker; each worker gets its own [`Upstream`] with its own connection pools
//! over that state. A reload or a DNS change swaps a new member list into every worker's
//! `Upstream` at once: endpoints that stay keep their state and connections, new ones start
//! dialling, removed ones drain (their calls in flight finish, then their connections close).

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::balance::Balancer;
use super::discovery::{self, Resolved};
use super::endpoint::{Endpoint, EndpointState};
use super::outlier::Outlier;
use super::pool::{Pool, PoolSettings, UpstreamShared};
use super::{Members, Upstream};
use crate::config::{EndpointSpec, UpstreamConfig};
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
                st.weight.set_slow_start(cfg.slow_start.0);
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
        let up = Arc::new(Upstream::with(self.name.clone(), g.view(endpoints)));
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

    /// Turns true when the group retires.
    pub fn retired(&self) -> watch::Receiver<bool> {
        self.retired.subscribe()
    }

    /// Re-resolves the group's `dns://` endpoints every `resolve_interval` on the current
    /// runtime, applying what changed, until `stop` turns true or the group retires. A lookup
    /// that fails or takes longer than [`discovery::LOOKUP_TIMEOUT`] keeps the addresses.
    pub fn watch_dns(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let group = self.clone();
        let mut retired = self.retired();
        tokio::spawn(async move {
            loop {
                let (names, interval) = {
                    let g = group.lock();
                    (discovery::dns_names(&g.cfg), g.cfg.resolve_interval.0)
                };
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                    _ = retired.changed() => return,
                }
                if names.is_empty() {
                    continue;
                }
                match discovery::resolve(group.name.to_string(), names).await {
                    Some(fresh) => {
                        let (cfg, tls) = {
                            let g = group.lock();
                            (g.cfg.clone(), g.tls.clone())
                        };
                        group.update(&cfg, fresh, tls);
                    }
                    None => tracing::warn!(upstream = %group.name, "DNS lookups took longer \
                        than {:?}; keeping the addresses", discovery::LOOKUP_TIMEOUT),
                }
            }
        });
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
        g.merge_dns(&self.name, cfg, fresh);
        let specs = &discovery::expand(cfg, &g.resolved);
        let pool_changed = g.cfg.pool != cfg.pool || g.cfg.tls != cfg.tls;
        let same_members = g.members.len() == specs.len()
            && g.members
                .iter()
                .zip(specs)
                .all(|((a, st), s)| *a == s.address && st.weight.get() == s.weight);
        let same_cfg = UpstreamConfig {
            endpoints: cfg.endpoints.clone(),
            ..g.cfg.clone()
        } == *cfg;
        if same_members && same_cfg {
            return false;
        }
        if pool_changed {
            g.tls = tls;
            g.settings = PoolSettings::from_config(&cfg.pool);
            g.settings.tls = g.tls.clone();
            g.shared = UpstreamShared::new(&cfg.name, g.settings.keepalive_time);
        }
        let members = g.carry_members(cfg, specs);
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
        g.swap_into_instances(pool_changed);
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
    members.iter().map(|(_, s)| s.weight.get()).collect()
}

fn new_endpoint(g: &GroupInner, addr: &str, state: &Arc<EndpointState>) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        state: state.clone(),
        pool: Pool::new(g.settings.clone(), g.shared.clone(), addr),
    })
}

impl GroupInner {
    /// Takes in fresh lookups: names no longer configured are forgotten, names missing from
    /// `fresh` keep their last addresses.
    fn merge_dns(&mut self, upstream: &str, cfg: &UpstreamConfig, fresh: Resolved) {
        let names = discovery::dns_names(cfg);
        self.resolved.retain(|k, _| names.contains(k));
        for (k, v) in fresh {
            if self.resolved.get(&k) != Some(&v) {
                tracing::info!(upstream, endpoint = %k, addresses = v.len(),
                    "DNS endpoint resolves to a new address set");
            }
            self.resolved.insert(k, v);
        }
    }

    /// The member list for `specs`: endpoints that stay keep their shared state (reweighted),
    /// new ones start a slow-start ramp now.
    fn carry_members(
        &self,
        cfg: &UpstreamConfig,
        specs: &[EndpointSpec],
    ) -> Vec<(String, Arc<EndpointState>)> {
        let now = crate::clock::now_ms();
        specs
            .iter()
            .map(|s| {
                let st = match self.members.iter().find(|(a, _)| *a == s.address) {
                    Some((_, st)) => st.clone(),
                    None => {
                        let st = Arc::new(EndpointState::new(s));
                        st.weight.set_slow_start(cfg.slow_start.0);
                        st.weight.ramp_from(now);
                        st
                    }
                };
                st.weight.set(s.weight);
                st.weight.set_slow_start(cfg.slow_start.0);
                (s.address.clone(), st)
            })
            .collect()
    }

    /// Swaps the current members into every worker's view: an endpoint that stays keeps its
    /// pool (unless the pool settings changed), new ones get one, removed ones drain.
    fn swap_into_instances(&self, pool_changed: bool) {
        for up in &self.instances {
            let old = up.members();
            let endpoints: Vec<Arc<Endpoint>> = self
                .members
                .iter()
                .map(
                    |(addr, st)| match old.endpoints.iter().find(|e| Arc::ptr_eq(&e.state, st)) {
                        Some(e) if !pool_changed => e.clone(),
                        _ => new_endpoint(self, addr, st),
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
            up.replace(self.view(endpoints), &added, &removed);
        }
    }

    fn restart_health(&mut self, name: &Arc<str>) {
        self.health_stop = None; // ends the old checkers
        let (Some(h), Some(stop)) = (self.cfg.health_check.clone(), self.stop.clone()) else {
            return;
        };
        let (tx, rx) = watch::channel(false);
        crate::upstream::health::spawn(name, &self.members, &h, self.tls.clone(), stop, rx);
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
