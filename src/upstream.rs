//! An upstream group: its endpoints (each with a pool), its balancer, its timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::balance::Balancer;
use crate::config::UpstreamConfig;
use crate::endpoint::Endpoint;
use crate::pool::{self, Pool, PoolSettings, UpstreamShared};

/// A named group of endpoints.
pub struct Upstream {
    /// The group's name.
    pub name: Arc<str>,
    /// Its endpoints, in configuration order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How an endpoint is picked.
    pub balancer: Balancer,
    /// Longest wait for response headers.
    pub request_timeout: Option<Duration>,
    /// Backoff cap after connect failures.
    pub backoff_max: Duration,
    /// State shared by the group's pools (the current keepalive interval).
    pub shared: Arc<UpstreamShared>,
    min_connections: usize,
}

impl Upstream {
    /// Builds the group (no connection is made until [`Upstream::start`]).
    pub fn new(cfg: &UpstreamConfig) -> Arc<Upstream> {
        let settings = PoolSettings::from_config(&cfg.pool);
        let shared = UpstreamShared::new(&cfg.name, settings.keepalive_time);
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| {
                let pool = Pool::new(settings.clone(), shared.clone(), &e.address);
                Arc::new(Endpoint::new(e, pool))
            })
            .collect();
        let weights: Vec<u32> = cfg.endpoints.iter().map(|e| e.weight).collect();
        Arc::new(Upstream {
            name: cfg.name.as_str().into(),
            endpoints,
            balancer: Balancer::new(cfg.balance, &weights),
            request_timeout: cfg.request_timeout.nonzero(),
            backoff_max: settings.backoff_max,
            shared,
            min_connections: settings.min,
        })
    }

    /// Starts each endpoint's pool maintenance (dials `min_connections`); returns at once.
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
