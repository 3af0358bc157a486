//! An upstream group: its endpoints, its balancer, its timeouts. The group's balancing state is
//! built once ([`UpstreamGroup`]) and shared by every worker; each worker gets its own
//! [`Upstream`] with its own connection pools over that shared state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::balance::Balancer;
use crate::config::UpstreamConfig;
use crate::endpoint::{Endpoint, EndpointState};
use crate::pool::{self, Pool, PoolSettings, UpstreamShared};

/// What the workers share about an upstream group.
pub struct UpstreamGroup {
    name: Arc<str>,
    states: Vec<Arc<EndpointState>>,
    addresses: Vec<String>,
    balancer: Arc<Balancer>,
    settings: PoolSettings,
    shared: Arc<UpstreamShared>,
    request_timeout: Option<Duration>,
}

impl UpstreamGroup {
    /// The group's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Each endpoint's address and shared state (load, health).
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, &Arc<EndpointState>)> {
        self.addresses.iter().map(String::as_str).zip(&self.states)
    }

    /// The shared state of the group described by `cfg`.
    pub fn new(cfg: &UpstreamConfig) -> Arc<UpstreamGroup> {
        let settings = PoolSettings::from_config(&cfg.pool);
        let weights: Vec<u32> = cfg.endpoints.iter().map(|e| e.weight).collect();
        Arc::new(UpstreamGroup {
            name: cfg.name.as_str().into(),
            states: cfg
                .endpoints
                .iter()
                .map(|e| Arc::new(EndpointState::new(e)))
                .collect(),
            addresses: cfg.endpoints.iter().map(|e| e.address.clone()).collect(),
            balancer: Arc::new(Balancer::new(cfg.balance, &weights)),
            shared: UpstreamShared::new(&cfg.name, settings.keepalive_time),
            settings,
            request_timeout: cfg.request_timeout.nonzero(),
        })
    }

    /// One worker's view: the shared state with a fresh pool per endpoint.
    pub fn instantiate(&self) -> Arc<Upstream> {
        let endpoints = self
            .states
            .iter()
            .zip(&self.addresses)
            .map(|(state, addr)| {
                Arc::new(Endpoint {
                    state: state.clone(),
                    pool: Pool::new(self.settings.clone(), self.shared.clone(), addr),
                })
            })
            .collect();
        Arc::new(Upstream {
            name: self.name.clone(),
            endpoints,
            balancer: self.balancer.clone(),
            request_timeout: self.request_timeout,
            backoff_max: self.settings.backoff_max,
            shared: self.shared.clone(),
            min_connections: self.settings.min,
        })
    }
}

/// A named group of endpoints, as one worker uses it.
pub struct Upstream {
    /// The group's name.
    pub name: Arc<str>,
    /// Its endpoints, in configuration order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How an endpoint is picked (shared by all workers).
    pub balancer: Arc<Balancer>,
    /// Longest wait for response headers.
    pub request_timeout: Option<Duration>,
    /// Backoff cap after connect failures.
    pub backoff_max: Duration,
    /// State shared by the group's pools (the current keepalive interval).
    pub shared: Arc<UpstreamShared>,
    min_connections: usize,
}

impl Upstream {
    /// A group used by a single worker (builds its shared state too).
    pub fn new(cfg: &UpstreamConfig) -> Arc<Upstream> {
        UpstreamGroup::new(cfg).instantiate()
    }

    /// Starts each endpoint's pool maintenance (dials `min_connections`) on the current
    /// runtime; it runs until `stop` changes.
    pub fn start(&self, stop: &watch::Receiver<bool>) {
        for ep in &self.endpoints {
            tokio::spawn(pool::maintain(ep.clone(), stop.clone()));
        }
    }

    /// True when some endpoint has an open connection — or, for pools that keep none open
    /// (`min_connections: 0`), when some endpoint is in rotation without failures.
    pub fn connected(&self) -> bool {
        self.endpoints.iter().any(|e| {
            e.pool.open_connections() > 0
                || (self.min_connections == 0 && e.available() && e.failures() == 0)
        })
    }
}
