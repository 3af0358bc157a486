//! One worker's view of an upstream group: [`Upstream`], whose [`Members`] (endpoints with
//! this worker's pools, the balancer, the timeouts) a reload or DNS change swaps at once; a call
//! keeps the members it started with.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::balance::Balancer;
use super::endpoint::Endpoint;
use super::outlier::Outlier;
use super::pool::{self, UpstreamShared};

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
    pub(super) min_connections: usize,
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
    /// A worker's view of group `name` with these members, not yet started.
    pub(super) fn with(name: Arc<str>, members: Members) -> Upstream {
        Upstream {
            name,
            members: ArcSwap::from_pointee(members),
            runner: Mutex::new(None),
        }
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
            rt.spawn(pool::maintain::maintain(ep.clone(), stop.clone()));
        }
        *runner = Some((rt.clone(), stop.clone()));
    }

    /// The worker's runtime this instance's pools run on, once started.
    pub fn runtime(&self) -> Option<Handle> {
        let runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        runner.as_ref().map(|(rt, _)| rt.clone())
    }

    pub(super) fn replace(
        &self,
        members: Members,
        added: &[Arc<Endpoint>],
        removed: &[Arc<Endpoint>],
    ) {
        let runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        self.members.store(Arc::new(members));
        if let Some((rt, stop)) = &*runner {
            for ep in added {
                rt.spawn(pool::maintain::maintain(ep.clone(), stop.clone()));
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
                || (m.min_connections == 0 && e.available() && e.reach.failures() == 0)
        })
    }
}
