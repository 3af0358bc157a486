//! What a plugin instance's store holds and the host functions it calls: the plugin's shared
//! counters, metrics and log budget, the memory limiter, the properties of the call a hook runs
//! for, and the `host` interface of both contract versions (0.1's three functions are 0.2's
//! first three).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{v1, v2, CallProperties, Level, Metric, MetricKind};
use super::callout::{Callees, Callouts};
use super::custom::{Kind, MetricDef, PluginMetricSet};
use super::state::State;
use crate::config::WasmConfig;
use crate::stack::Inbound;
use crate::telemetry::Registry;

/// Counters a plugin holds at most.
pub const MAX_COUNTERS: usize = 10_000;
/// The longest counter key.
pub const MAX_COUNTER_KEY: usize = 256;
/// The longest log line a plugin may write.
const MAX_LOG: usize = 4096;
/// Log lines a plugin may write per second (all its instances together); the rest are dropped
/// and counted in the next line that gets through.
const LOGS_PER_SECOND: u64 = 100;

/// What a plugin's instances share: its name, its counters, its metrics, its callouts and its
/// state.
pub struct PluginShared {
    /// The plugin's name.
    pub name: Arc<str>,
    counters: DashMap<String, AtomicI64>,
    /// The metrics it defined (`define-metric`).
    pub metrics: Arc<PluginMetricSet>,
    /// The upstream groups it may call and the bounds on its callouts (`None`: it may call
    /// none).
    pub callouts: Option<Callouts>,
    /// Its key-value store.
    pub state: Arc<State>,
    /// The second (since the Unix epoch) the log budget is counted for, and lines used in it.
    log_second: AtomicU64,
    log_lines: AtomicU64,
    log_dropped: AtomicU64,
}

impl PluginShared {
    /// The shared part of plugin `cfg`, with no counters yet, its metrics shown on `registry`,
    /// calling out to the groups of `callees` its `callouts` allow.
    pub fn new(cfg: &WasmConfig, registry: &Registry, callees: &Callees) -> Arc<PluginShared> {
        let name: Arc<str> = cfg.name.as_str().into();
        Arc::new(PluginShared {
            metrics: PluginMetricSet::new(registry, name.clone()),
            callouts: cfg
                .callouts
                .as_ref()
                .map(|c| Callouts::new(c, callees, cfg.max_message())),
            state: State::new(&cfg.name, &cfg.state),
            name,
            counters: DashMap::new(),
            log_second: AtomicU64::new(0),
            log_lines: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
        })
    }

    /// Whether one more log line fits this second's budget; when it does, also how many lines
    /// were dropped since the last one that got through.
    fn log_budget(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.log_second.swap(now, Ordering::Relaxed) != now {
            self.log_lines.store(0, Ordering::Relaxed);
        }
        if self.log_lines.fetch_add(1, Ordering::Relaxed) >= LOGS_PER_SECOND {
            self.log_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.log_dropped.swap(0, Ordering::Relaxed))
    }

    /// Whether its host functions can wait (it has callouts, or its state is in Redis).
    pub fn can_wait(&self) -> bool {
        self.callouts.is_some() || self.state.in_redis()
    }

    fn counter_add(&self, key: String, delta: i64) -> i64 {
        if key.len() > MAX_COUNTER_KEY {
            return 0;
        }
        if let Some(c) = self.counters.get(&key) {
            return c.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta);
        }
        if self.counters.len() >= MAX_COUNTERS {
            return 0;
        }
        let c = self
            .counters
            .entry(key)
            .or_insert_with(|| AtomicI64::new(0));
        c.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta)
    }
}

/// The data of one instance's store.
pub struct HostState {
    pub(super) shared: Arc<PluginShared>,
    pub(super) limiter: Limiter,
    /// The running call's (or instantiation's, or `init`'s) time budget.
    pub(super) budget: super::budget::Budget,
    pub(super) wasi: Option<(WasiCtx, ResourceTable)>,
    /// The call the running hook is for (`properties`); `None` in `init`.
    pub(super) call: Option<Arc<CallCtx>>,
    /// Callouts the running hook call made so far (bounded by `callouts.max_per_hook`).
    pub(super) callouts_made: u32,
    /// Raised while a host function of the running hook call waits (see [`HostWait`]).
    pub(super) host_wait: Option<HostWait>,
}

/// Raised while a hook call waits in a host function (a callout, a Redis round trip) rather
/// than runs guest code: such a call stays on its worker instead of moving to the plugin threads
/// (see `offload.rs`).
pub type HostWait = Arc<std::sync::atomic::AtomicBool>;

/// Caps linear memory; remembers a refused growth so the failure is reported as `memory`.
pub(super) struct Limiter {
    pub(super) memory: usize,
    pub(super) refused: bool,
    /// The linear memory granted so far, in bytes, all the instance's memories together.
    pub(super) granted: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory && maximum.is_none_or(|m| desired <= m);
        self.refused |= !ok;
        if ok {
            self.granted += desired.saturating_sub(current);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000 && maximum.is_none_or(|m| desired <= m))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, table) = self
            .wasi
            .get_or_insert_with(|| (WasiCtx::builder().build(), ResourceTable::new()));
        WasiCtxView { ctx, table }
    }
}

/// What `properties` shows of the call a hook runs for. One per call and plugin stage, made
/// when the call reaches the stage (one clock read); the rest is read only when a plugin asks.
#[derive(Debug)]
pub struct CallCtx {
    /// The listener and TLS facts of the client's connection.
    pub inbound: Option<Arc<Inbound>>,
    /// When the call reached the stage.
    pub started: Instant,
    /// The worker the call came on (whose pools its callouts use); `None` off the workers.
    pub worker: Option<usize>,
    /// The call's deadline (`grpc-timeout`), which also bounds its callouts.
    pub deadline: Option<Instant>,
    /// The upstream group and endpoint serving it, once known (response side).
    pub served: std::sync::OnceLock<(Arc<str>, Option<Arc<str>>)>,
}

impl CallCtx {
    /// A call arriving now, on the connection `inbound` describes.
    pub fn new(inbound: Option<Arc<Inbound>>) -> CallCtx {
        CallCtx {
            inbound,
            started: Instant::now(),
            worker: crate::stack::worker(),
            deadline: None,
            served: std::sync::OnceLock::new(),
        }
    }

    /// The same, with the deadline `ms` milliseconds from when it reached the stage.
    pub fn with_deadline(mut self, ms: Option<u64>) -> CallCtx {
        self.deadline = ms.map(|ms| self.started + std::time::Duration::from_millis(ms));
        self
    }

    fn properties(&self) -> CallProperties {
        let inbound = self.inbound.as_deref();
        let text = |s: &Option<Arc<str>>| s.as_deref().map(str::to_string);
        let served = self.served.get();
        let elapsed = self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        CallProperties {
            listener: inbound.map_or_else(String::new, |i| i.listener.to_string()),
            upstream_group: served.map(|(g, _)| g.to_string()),
            upstream_endpoint: served.and_then(|(_, e)| text(e)),
            start_unix_nanos: unix_nanos().saturating_sub(elapsed),
            elapsed_nanos: elapsed,
            tls_server_name: inbound.and_then(|i| text(&i.server_name)),
            client_identity: inbound.and_then(|i| text(&i.client_identity)),
        }
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

impl v2::synapsor::plugin::types::Host for HostState {}

impl v2::synapsor::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) {
        // A line the log level would not show neither costs nor counts against the budget.
        let shown = match level {
            Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(tracing::Level::INFO),
            Level::Warn => tracing::enabled!(tracing::Level::WARN),
            Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !shown {
            return;
        }
        let Some(dropped) = self.shared.log_budget() else {
            return;
        };
        if dropped > 0 {
            tracing::warn!(plugin = %self.shared.name, "{dropped} log lines dropped (over {LOGS_PER_SECOND} a second)");
        }
        if message.len() > MAX_LOG {
            let mut cut = MAX_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.shared.name;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_unix_nanos(&mut self) -> u64 {
        unix_nanos()
    }

    fn counter_add(&mut self, key: String, delta: i64) -> i64 {
        self.shared.counter_add(key, delta)
    }

    fn properties(&mut self) -> Option<CallProperties> {
        self.call.as_deref().map(CallCtx::properties)
    }

    fn define_metric(&mut self, m: Metric) -> Result<u32, String> {
        let kind = match m.kind {
            MetricKind::Counter => Kind::Counter,
            MetricKind::Gauge => Kind::Gauge,
            MetricKind::Histogram => Kind::Histogram,
        };
        self.shared.metrics.define(MetricDef {
            name: m.name,
            help: m.help,
            kind,
            labels: m.labels,
            buckets: m.buckets,
        })
    }

    fn metric_add(&mut self, id: u32, labels: Vec<String>, value: f64) {
        self.shared.metrics.add(id, &labels, value);
    }

    fn metric_set(&mut self, id: u32, labels: Vec<String>, value: f64) {
        self.shared.metrics.set(id, &labels, value);
    }

    fn metric_observe(&mut self, id: u32, labels: Vec<String>, value: f64) {
        self.shared.metrics.observe(id, &labels, value);
    }
}

impl v1::synapsor::plugin::types::Host for HostState {}

/// The 0.1 host functions are the same three as 0.2's first three.
impl v1::synapsor::plugin::host::Host for HostState {
    fn log(&mut self, level: v1::synapsor::plugin::host::Level, message: String) {
        use v1::synapsor::plugin::host::Level as L1;
        let level = match level {
            L1::Trace => Level::Trace,
            L1::Debug => Level::Debug,
            L1::Info => Level::Info,
            L1::Warn => Level::Warn,
            L1::Error => Level::Error,
        };
        v2::synapsor::plugin::host::Host::log(self, level, message);
    }

    fn now_unix_nanos(&mut self) -> u64 {
        v2::synapsor::plugin::host::Host::now_unix_nanos(self)
    }

    fn counter_add(&mut self, key: String, delta: i64) -> i64 {
        self.shared.counter_add(key, delta)
    }
}
