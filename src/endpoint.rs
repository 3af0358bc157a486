//! One upstream endpoint: its weight, live load, latency estimate, health and outlier state —
//! shared by every worker — and, per worker, its connection pool.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Effective weights are in hundredths of a configured weight unit.
pub const WEIGHT_SCALE: u64 = 100;
/// The share a slow-starting endpoint begins with, in percent of its weight.
const SLOW_START_FLOOR: u64 = 10;

/// The state of an endpoint that all workers share; atomics only.
pub struct EndpointState {
    /// `host:port` as dialled.
    pub address: Arc<str>,
    /// Relative share of traffic (changed by a reload).
    weight: AtomicU32,
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
    /// Passive outlier detection: failed calls in a row.
    pub(crate) consecutive: AtomicU32,
    /// Ejected until this time (ms); the last ejection's end, or 0 if never ejected.
    pub(crate) ejected_until: AtomicU64,
    /// Ejections counted towards the next ejection's length.
    pub(crate) ejections: AtomicU32,
    /// Ejections since start (for metrics).
    pub(crate) ejections_total: AtomicU64,
    /// Slow start: the ramp began at this time (ms); 0 = full weight.
    ramp_from: AtomicU64,
    /// Slow start window in ms; 0 = off.
    slow_start_ms: AtomicU64,
    /// Why the last connect failed, while the endpoint is in connect backoff.
    last_error: Mutex<Option<Arc<str>>>,
}

impl EndpointState {
    /// An endpoint in rotation with no load.
    pub fn new(spec: &EndpointSpec) -> EndpointState {
        EndpointState {
            address: spec.address.as_str().into(),
            weight: AtomicU32::new(spec.weight),
            in_flight: AtomicU64::new(0),
            latency: PeakEwma::new(),
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            unhealthy: AtomicBool::new(false),
            consecutive: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            ramp_from: AtomicU64::new(0),
            slow_start_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight (a reload reweighted the endpoint).
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }

    /// Sets the slow-start window applied whenever the endpoint (re)joins rotation.
    pub fn set_slow_start(&self, window: Duration) {
        self.slow_start_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
    }

    /// Starts a slow-start ramp at `at_ms` (when a window is configured).
    pub fn ramp_from(&self, at_ms: u64) {
        if self.slow_start_ms.load(Ordering::Relaxed) > 0 {
            self.ramp_from.store(at_ms.max(1), Ordering::Relaxed);
        }
    }

    /// The weight the balancer uses, in [`WEIGHT_SCALE`] units: the configured weight, scaled
    /// down while a slow-start ramp runs (from 10% up to 100% over the window).
    pub fn effective_weight(&self) -> u64 {
        let full = u64::from(self.weight()) * WEIGHT_SCALE;
        match self.ramp_share() {
            None => full,
            Some(pct) => (full * pct / 100).max(1),
        }
    }

    /// The share of its weight a ramping endpoint gets now, in percent; `None` at full weight.
    pub fn ramp_share(&self) -> Option<u64> {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == 0 {
            return None;
        }
        let now = clock::now_ms();
        let window = self.slow_start_ms.load(Ordering::Relaxed);
        if now < from {
            return Some(SLOW_START_FLOOR);
        }
        let elapsed = now - from;
        if window == 0 || elapsed >= window {
            self.ramp_from.store(0, Ordering::Relaxed);
            return None;
        }
        Some((elapsed * 100 / window).max(SLOW_START_FLOOR))
    }

    /// True unless recent connect failures, failed health checks or an outlier ejection took
    /// the endpoint out of rotation.
    pub fn available(&self) -> bool {
        if self.unhealthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        let ejected = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 && ejected == 0 {
            return true;
        }
        let now = clock::now_ms();
        now >= until && now >= ejected
    }

    /// True while an outlier ejection keeps the endpoint out.
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && clock::now_ms() < until
    }

    /// Time left of the current ejection (zero when not ejected).
    pub fn ejected_for(&self) -> Duration {
        let until = self.ejected_until.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(clock::now_ms()))
    }

    /// Ejections since the gateway started.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Whether active health checks consider the endpoint healthy (true without checks).
    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Puts the endpoint in or out of rotation, as active health checks decide; coming back
    /// starts a slow-start ramp.
    pub fn set_healthy(&self, healthy: bool) {
        let was = !self.unhealthy.swap(!healthy, Ordering::Relaxed);
        if healthy && !was {
            self.ramp_from(clock::now_ms());
        }
    }

    /// Records a failed connect and why: the endpoint leaves rotation for an exponential backoff
    /// (with jitter, capped at `cap`). Returns the failure count and the backoff.
    pub fn connect_failed(&self, cap: Duration, why: &str) -> (u32, Duration) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
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
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.failures.store(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// Consecutive connect failures so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the endpoint is out of rotation now (`None` when it is in): what a call that finds
    /// no endpoint is told, so the cause reaches the client and not only the log.
    pub fn out_of_rotation(&self) -> Option<String> {
        if !self.healthy() {
            return Some(format!("{}: failing its health checks", self.address));
        }
        if self.ejected() {
            return Some(format!(
                "{}: ejected by outlier detection for {:?} more",
                self.address,
                self.ejected_for()
            ));
        }
        let retry = self.retry_in();
        if retry.is_zero() {
            return None;
        }
        let why = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(format!(
            "{}: {} (tried {} times; next try in {retry:?})",
            self.address,
            why.as_deref().unwrap_or("connecting failed"),
            self.failures()
        ))
    }
}
