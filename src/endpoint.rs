//! One upstream endpoint: its weight, live load, latency estimate and health — shared by every
//! worker — and, per worker, its connection pool.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::PeakEwma;
use crate::clock;
use crate::config::EndpointSpec;
use crate::pool::Pool;

/// An endpoint of an upstream group as one worker sees it: the shared state (through `Deref`)
/// and this worker's connections.
pub struct Endpoint {
    /// What every worker shares: load, latency, health.
    pub state: Arc<EndpointState>,
    /// This worker's connections to the endpoint.
    pub pool: Pool,
}

impl Endpoint {
    /// An endpoint with fresh state and an empty pool.
    pub fn new(spec: &EndpointSpec, pool: Pool) -> Endpoint {
        Endpoint {
            state: Arc::new(EndpointState::new(spec)),
            pool,
        }
    }
}

impl Deref for Endpoint {
    type Target = EndpointState;
    fn deref(&self) -> &EndpointState {
        &self.state
    }
}

/// The state of an endpoint that all workers share; atomics only.
pub struct EndpointState {
    /// `host:port` as configured.
    pub address: Arc<str>,
    /// Relative share of traffic.
    pub weight: u32,
    /// Streams open on this endpoint right now (a stream counts until it ends).
    pub in_flight: AtomicU64,
    /// Peak-EWMA of the time to response headers.
    pub latency: PeakEwma,
    /// Consecutive connect failures.
    failures: AtomicU32,
    /// Out of rotation until this time (ms on [`clock::now_ms`]); 0 = in rotation.
    down_until: AtomicU64,
    /// Taken out of rotation by active health checks.
    unhealthy: AtomicBool,
}

impl EndpointState {
    /// An endpoint in rotation with no load.
    pub fn new(spec: &EndpointSpec) -> EndpointState {
        EndpointState {
            address: spec.address.as_str().into(),
            weight: spec.weight,
            in_flight: AtomicU64::new(0),
            latency: PeakEwma::new(),
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            unhealthy: AtomicBool::new(false),
        }
    }

    /// True unless recent connect failures or failed health checks took the endpoint out of
    /// rotation.
    pub fn available(&self) -> bool {
        if self.unhealthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        until == 0 || clock::now_ms() >= until
    }

    /// Whether active health checks consider the endpoint healthy (true without checks).
    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Puts the endpoint in or out of rotation, as active health checks decide.
    pub fn set_healthy(&self, healthy: bool) {
        self.unhealthy.store(!healthy, Ordering::Relaxed);
    }

    /// Records a failed connect: the endpoint leaves rotation for an exponential backoff
    /// (with jitter, capped at `cap`). Returns the failure count and the backoff.
    pub fn connect_failed(&self, cap: Duration) -> (u32, Duration) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let wait = crate::pool::backoff(n, cap);
        let until = clock::now_ms() + wait.as_millis() as u64;
        self.down_until.store(until.max(1), Ordering::Relaxed);
        (n, wait)
    }

    /// Time left until the endpoint is tried again (zero when in rotation).
    pub fn retry_in(&self) -> Duration {
        let until = self.down_until.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(clock::now_ms()))
    }

    /// Records a successful connect: back in rotation.
    pub fn connect_succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// Consecutive connect failures so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}
