//! Instances of one loaded plugin version: the per-store state the host functions see, the
//! memory limiter, the bounded pool of reusable instances, and one hook call with its deadline.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{
    synapsor, Interceptor, InterceptorPre, Level, RequestAction, RequestInfo, ResponseAction,
    ResponseInfo,
};
use super::Failure;

/// How long a call runs before an epoch tick makes it yield (and, on a worker, move to the
/// plugin threads, see [`super::offload`]): a tick that comes sooner lets it go on. With the
/// 1 ms tick a call that runs long yields within about 1.25 ms of starting.
pub const INLINE_SLICE: Duration = Duration::from_micros(250);

/// Counters a plugin holds at most.
pub const MAX_COUNTERS: usize = 10_000;
/// The longest counter key.
pub const MAX_COUNTER_KEY: usize = 256;
/// The longest log line a plugin may write.
const MAX_LOG: usize = 4096;
/// Log lines a plugin may write per second (all its instances together); the rest are dropped
/// and counted in the next line that gets through.
const LOGS_PER_SECOND: u64 = 100;

/// What a plugin's instances share: its name and its counters.
pub struct PluginShared {
    /// The plugin's name.
    pub name: Arc<str>,
    counters: DashMap<String, AtomicI64>,
    /// The second (since the Unix epoch) the log budget is counted for, and lines used in it.
    log_second: AtomicU64,
    log_lines: AtomicU64,
    log_dropped: AtomicU64,
}

impl PluginShared {
    /// A plugin with no counters yet.
    pub fn new(name: &str) -> Arc<PluginShared> {
        Arc::new(PluginShared {
            name: name.into(),
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
    shared: Arc<PluginShared>,
    limiter: Limiter,
    /// When the running call (or instantiation, or `init`) started, and when it must end.
    started: Instant,
    deadline: Instant,
    wasi: Option<(WasiCtx, ResourceTable)>,
}

/// Caps linear memory; remembers a refused growth so the failure is reported as `memory`.
struct Limiter {
    memory: usize,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory && maximum.is_none_or(|m| desired <= m);
        self.refused |= !ok;
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

impl synapsor::plugin::types::Host for HostState {}

impl synapsor::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) {
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
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    fn counter_add(&mut self, key: String, delta: i64) -> i64 {
        self.shared.counter_add(key, delta)
    }
}

/// One instance: its store and its bindings.
pub struct Instance {
    store: Store<HostState>,
    bindings: Interceptor,
    calls: u64,
}

/// The limits an instance runs under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most linear memory.
    pub memory: usize,
    /// The most time one hook call may take.
    pub timeout: Duration,
}

impl Limits {
    /// The most time instantiating, and then `init`, may each take: ten times the call
    /// timeout, at least 100 ms (a new instance's first run touches fresh memory).
    pub fn start_timeout(&self) -> Duration {
        (self.timeout * 10).max(Duration::from_millis(100))
    }
}

/// One compiled and linked version of a plugin, with its idle instances.
pub struct Version {
    pre: InterceptorPre<HostState>,
    wasi: bool,
    config: Arc<str>,
    shared: Arc<PluginShared>,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    /// Bounds the instances alive (busy or idle) to `max_instances`, shared across versions.
    slots: Arc<Semaphore>,
    recycle_after: u64,
    /// Which load this is (1 = the first), for logs.
    pub generation: u64,
}

/// Everything needed to build a [`Version`].
pub struct VersionParts {
    /// The pre-linked component.
    pub pre: InterceptorPre<HostState>,
    /// Whether its stores need a WASI context.
    pub wasi: bool,
    /// The JSON config handed to `init`.
    pub config: Arc<str>,
    /// The plugin's shared state.
    pub shared: Arc<PluginShared>,
    /// Memory and time limits.
    pub limits: Limits,
    /// The plugin's instance slots.
    pub slots: Arc<Semaphore>,
    /// Calls before a reused instance is replaced (1 = a fresh instance per call).
    pub recycle_after: u64,
    /// Which load this is.
    pub generation: u64,
}

/// An instance checked out for one call; it holds one of the plugin's slots.
pub struct Lease {
    instance: Instance,
    _permit: OwnedSemaphorePermit,
}

impl Version {
    /// A version with no instances yet.
    pub fn new(p: VersionParts) -> Version {
        Version {
            pre: p.pre,
            wasi: p.wasi,
            config: p.config,
            shared: p.shared,
            limits: p.limits,
            idle: Mutex::new(Vec::new()),
            slots: p.slots,
            recycle_after: p.recycle_after,
            generation: p.generation,
        }
    }

    /// A fresh instance, `init`ed with the plugin's config (used at load time to prove the
    /// version works, and whenever the pool is empty).
    pub async fn instantiate(&self) -> Result<Instance, Failure> {
        let state = HostState {
            shared: self.shared.clone(),
            limiter: Limiter {
                memory: self.limits.memory,
                refused: false,
            },
            started: Instant::now(),
            deadline: Instant::now() + self.limits.start_timeout(),
            wasi: self
                .wasi
                .then(|| (WasiCtx::builder().build(), ResourceTable::new())),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            let (now, data) = (Instant::now(), ctx.data());
            Ok(if now >= data.deadline {
                UpdateDeadline::Interrupt
            } else if now - data.started < INLINE_SLICE {
                // The tick came early in the call: no reason to yield (and to move it off
                // its worker) yet.
                UpdateDeadline::Continue(1)
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        let bindings = match self.pre.instantiate_async(&mut store).await {
            Ok(b) => b,
            Err(e) => return Err(Failure::classify(&e, &store, "instantiate")),
        };
        arm(&mut store, self.limits.start_timeout());
        match bindings.call_init(&mut store, &self.config).await {
            Ok(Ok(())) => Ok(Instance {
                store,
                bindings,
                calls: 0,
            }),
            Ok(Err(msg)) => Err(Failure::Init(msg)),
            Err(e) => Err(Failure::classify(&e, &store, "init")),
        }
    }

    /// Puts a fresh instance in the idle pool.
    pub fn keep(&self, instance: Instance) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instance);
    }

    /// Checks out an instance: an idle one, or a new one when a slot is free; waits for a slot
    /// up to the plugin's timeout.
    pub async fn lease(&self) -> Result<Lease, Failure> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.limits.timeout, self.slots.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Err(Failure::Busy),
                }
            }
        };
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let instance = match idle {
            Some(i) => i,
            None => self.instantiate().await?,
        };
        Ok(Lease {
            instance,
            _permit: permit,
        })
    }

    /// Returns a healthy instance to the pool (unless it has served `recycle_after` calls).
    pub fn release(&self, mut lease: Lease) {
        lease.instance.calls += 1;
        if lease.instance.calls >= self.recycle_after {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(lease.instance);
        // The permit drops after the instance is idle, so a waiter finds it.
    }

    /// Runs `on-request` on a leased instance (on the plugin threads once it runs long, see
    /// [`super::offload`]). On failure the instance is dropped.
    pub async fn on_request(self: &Arc<Self>, info: RequestInfo) -> Result<RequestAction, Failure> {
        let this = self.clone();
        super::offload::run(async move {
            let mut lease = this.armed_lease().await?;
            let i = &mut lease.instance;
            let r = i.bindings.call_on_request(&mut i.store, &info).await;
            this.settle(lease, r, "on-request")
        })
        .await
    }

    /// Runs `on-response` on a leased instance, as [`Version::on_request`] does.
    pub async fn on_response(
        self: &Arc<Self>,
        info: ResponseInfo,
    ) -> Result<ResponseAction, Failure> {
        let this = self.clone();
        super::offload::run(async move {
            let mut lease = this.armed_lease().await?;
            let i = &mut lease.instance;
            let r = i.bindings.call_on_response(&mut i.store, &info).await;
            this.settle(lease, r, "on-response")
        })
        .await
    }

    /// An instance with the deadline of one call set.
    async fn armed_lease(&self) -> Result<Lease, Failure> {
        let mut lease = self.lease().await?;
        lease.instance.arm(self.limits.timeout);
        Ok(lease)
    }

    /// After a hook call: the instance goes back to the pool, or is dropped with the failure.
    fn settle<T>(
        &self,
        lease: Lease,
        r: wasmtime::Result<T>,
        during: &'static str,
    ) -> Result<T, Failure> {
        match r {
            Ok(a) => {
                self.release(lease);
                Ok(a)
            }
            Err(e) => Err(Failure::classify(&e, &lease.instance.store, during)),
        }
    }
}

impl Instance {
    /// Sets the deadline of the next call.
    fn arm(&mut self, timeout: Duration) {
        arm(&mut self.store, timeout);
    }
}

/// Starts the clock of a call (or instantiation, or `init`) that may run for `timeout`: the
/// epoch callback checks it at the next tick (a new store's epoch deadline is 0).
fn arm(store: &mut Store<HostState>, timeout: Duration) {
    let now = Instant::now();
    let data = store.data_mut();
    (data.started, data.deadline) = (now, now + timeout);
    store.set_epoch_deadline(1);
}

impl Failure {
    /// Names what went wrong in a call that returned `e`.
    fn classify(e: &wasmtime::Error, store: &Store<HostState>, during: &'static str) -> Failure {
        let detail = format!("{during}: {e:#}");
        if store.data().limiter.refused {
            return Failure::Memory(detail);
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Failure::Timeout(during),
            Some(_) => Failure::Trap(detail),
            None if during == "instantiate" => Failure::Instantiate(detail),
            None => Failure::Trap(detail),
        }
    }
}
