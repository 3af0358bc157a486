//! One upstream endpoint: [`EndpointState`], what every worker shares about it — made of parts,
//! each written by one module (the [`Weight`] by reloads, health checks and outlier detection
//! through their hooks; [`Reach`] by the pool's dials; [`Health`] by the health checker;
//! [`Ejection`] by outlier detection; the load counters by the forwarder) — and, per worker,
//! [`Endpoint`]: that state with the worker's connection pool.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ewma::PeakEwma;
use super::health::{Checked, Health};
use super::load::{Load, Weight};
use super::outlier::{Ejectable, Ejection};
use super::pool::maintain::Maintained;
use super::pool::{Pool, Reach};
use crate::clock;
use crate::config::EndpointSpec;

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

/// The state of an endpoint that all workers share.
pub struct EndpointState {
    /// `host:port` as dialled.
    pub address: Arc<str>,
    /// Configured weight and slow-start ramp.
    pub weight: Weight,
    /// Streams open on this endpoint right now (a stream counts until it ends); the forwarder's.
    pub in_flight: AtomicU64,
    /// Peak-EWMA of the time to response headers; the forwarder's.
    pub latency: PeakEwma,
    /// Connect failures and backoff; the pool's.
    pub reach: Reach,
    /// Active health; the health checker's.
    pub health: Health,
    /// Passive outlier state; outlier detection's.
    pub ejection: Ejection,
}

impl EndpointState {
    /// An endpoint in rotation with no load.
    pub fn new(spec: &EndpointSpec) -> EndpointState {
        EndpointState {
            address: spec.address.as_str().into(),
            weight: Weight::new(spec.weight),
            in_flight: AtomicU64::new(0),
            latency: PeakEwma::new(),
            reach: Reach::default(),
            health: Health::default(),
            ejection: Ejection::default(),
        }
    }

    /// True unless recent connect failures, failed health checks or an outlier ejection took
    /// the endpoint out of rotation.
    pub fn available(&self) -> bool {
        if !self.health.healthy() {
            return false;
        }
        let until = self.reach.down_until_ms();
        let ejected = self.ejection.until_ms();
        if until == 0 && ejected == 0 {
            return true;
        }
        let now = clock::now_ms();
        now >= until && now >= ejected
    }

    /// Why the endpoint is out of rotation now (`None` when it is in): what a call that finds
    /// no endpoint is told, so the cause reaches the client and not only the log.
    pub fn out_of_rotation(&self) -> Option<String> {
        if !self.health.healthy() {
            return Some(format!("{}: failing its health checks", self.address));
        }
        if self.ejection.ejected() {
            return Some(format!(
                "{}: ejected by outlier detection for {:?} more",
                self.address,
                self.ejection.ejected_for()
            ));
        }
        let retry = self.reach.retry_in();
        if retry.is_zero() {
            return None;
        }
        let why = self.reach.last_error();
        Some(format!(
            "{}: {} (tried {} times; next try in {retry:?})",
            self.address,
            why.as_deref().unwrap_or("connecting failed"),
            self.reach.failures()
        ))
    }
}

impl Load for EndpointState {
    fn available(&self) -> bool {
        EndpointState::available(self)
    }
    fn effective_weight(&self) -> u64 {
        self.weight.effective()
    }
    fn ramp_share(&self) -> Option<u64> {
        self.weight.ramp_share()
    }
    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn latency_nanos(&self) -> f64 {
        self.latency.get()
    }
}

impl Load for Endpoint {
    fn available(&self) -> bool {
        self.state.available()
    }
    fn effective_weight(&self) -> u64 {
        self.state.effective_weight()
    }
    fn ramp_share(&self) -> Option<u64> {
        self.state.weight.ramp_share()
    }
    fn in_flight(&self) -> u64 {
        Load::in_flight(&*self.state)
    }
    fn latency_nanos(&self) -> f64 {
        self.state.latency_nanos()
    }
}

impl Checked for EndpointState {
    fn health(&self) -> &Health {
        &self.health
    }
    fn rejoined(&self) {
        self.weight.ramp_from(clock::now_ms());
    }
}

impl Ejectable for Endpoint {
    fn address(&self) -> &str {
        &self.address
    }
    fn ejection(&self) -> &Ejection {
        &self.ejection
    }
    fn ejected_until(&self, until_ms: u64) {
        self.weight.ramp_from(until_ms);
    }
}

impl Maintained for Endpoint {
    fn pool(&self) -> &Pool {
        &self.pool
    }
    fn reach(&self) -> &Reach {
        &self.reach
    }
    fn available(&self) -> bool {
        self.state.available()
    }
}
