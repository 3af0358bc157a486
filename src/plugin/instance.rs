//! Instances of one loaded plugin version: the bounded pool of reusable instances, and one hook
//! call with its deadline (the store's state and the host functions are in `host.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi::WasiCtx;

use super::bindings::{
    Hooks, Message, MessageAction, RequestAction, RequestInfo, ResponseAction, ResponseInfo,
};
use super::compat::{Direction, Guest, Pre};
use super::host::{CallCtx, HostState, HostWait, Limiter, PluginShared};
use super::Failure;

use super::budget::Budget;
pub use super::budget::INLINE_SLICE;

/// Instances of one plugin version created at once, at most (see [`Version::lease`]).
pub const CREATING_AT_ONCE: usize = 2;

/// One instance: its store and its bindings.
pub struct Instance {
    store: Store<HostState>,
    guest: Guest,
    calls: u64,
}

impl Instance {
    /// Its linear memory, in bytes (every core memory of the component together).
    pub fn linear_memory(&self) -> usize {
        self.store.data().limiter.granted
    }
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
    pre: Pre,
    wasi: bool,
    config: Arc<str>,
    shared: Arc<PluginShared>,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    /// Instances being created now (at most [`CREATING_AT_ONCE`]).
    creating: Semaphore,
    /// Woken when an instance comes back to `idle`, a slot frees or a creation ends.
    returned: Notify,
    /// Bounds the instances alive (busy or idle) to `max_instances`, shared across versions.
    slots: Arc<Semaphore>,
    recycle_after: u64,
    /// Which load this is (1 = the first), for logs.
    pub generation: u64,
    /// The message hooks its first instance's `init` asked for.
    hooks: std::sync::OnceLock<Hooks>,
}

/// Everything needed to build a [`Version`].
pub struct VersionParts {
    /// The pre-linked component.
    pub pre: Pre,
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
            creating: Semaphore::new(CREATING_AT_ONCE),
            returned: Notify::new(),
            slots: p.slots,
            recycle_after: p.recycle_after,
            generation: p.generation,
            hooks: std::sync::OnceLock::new(),
        }
    }

    /// The message hooks this version's plugin asked for (the first instance's answer).
    pub fn hooks(&self) -> Hooks {
        self.hooks.get().copied().unwrap_or(Hooks::empty())
    }

    /// A fresh instance, `init`ed with the plugin's config (used at load time to prove the
    /// version works, and whenever the pool is empty).
    pub async fn instantiate(&self) -> Result<Instance, Failure> {
        let state = HostState {
            shared: self.shared.clone(),
            limiter: Limiter {
                memory: self.limits.memory,
                refused: false,
                granted: 0,
            },
            budget: Budget::start(self.limits.start_timeout()),
            wasi: self
                .wasi
                .then(|| (WasiCtx::builder().build(), ResourceTable::new())),
            call: None,
            callouts_made: 0,
            host_wait: None,
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().budget.tick()));
        store.set_epoch_deadline(1);
        let guest = match self.pre.instantiate(&mut store).await {
            Ok(g) => g,
            Err(e) => return Err(Failure::classify(&e, &store, "instantiate")),
        };
        arm(&mut store, self.limits.start_timeout());
        match guest.init(&mut store, &self.config).await {
            Ok(Ok(hooks)) => {
                let _ = self.hooks.set(hooks);
                Ok(Instance {
                    store,
                    guest,
                    calls: 0,
                })
            }
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
    /// up to the plugin's timeout. At most [`CREATING_AT_ONCE`] instances are created at once:
    /// a call that finds none idle while that many are being created waits (within the same
    /// timeout) for an instance to come back to the pool. Without the bound a burst of calls
    /// to a plugin whose instances take milliseconds to create (an interpreter) made every
    /// one of them create its own, up to `max_instances` (measured: 64 Python instances,
    /// 780 MiB, and calls timing out on the crowded cores).
    pub async fn lease(&self) -> Result<Lease, Failure> {
        // The common case touches no clock, timer or waiter list: a free slot, an idle instance.
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
        let instance = match self.take_idle() {
            Some(i) => i,
            None => self.create_or_wait().await?,
        };
        Ok(Lease {
            instance,
            _permit: permit,
        })
    }

    fn take_idle(&self) -> Option<Instance> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// With a slot and no idle instance: creates one, or, while [`CREATING_AT_ONCE`] are being
    /// created, waits (up to the plugin's timeout) for one to come back to the pool.
    async fn create_or_wait(&self) -> Result<Instance, Failure> {
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(instance) = self.take_idle() {
                return Ok(instance);
            }
            if let Ok(_creating) = self.creating.try_acquire() {
                let made = self.instantiate().await;
                // A waiter may create the next one (or take this one once it is released).
                self.returned.notify_one();
                return made;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::Busy);
            }
            // Looked at again at least every tick: a lease dropped mid-call (its client gone)
            // frees its slot without a wake-up.
            let again = (tokio::time::Instant::now() + super::budget::TICK).min(deadline);
            let _ = tokio::time::timeout_at(again, returned).await;
        }
    }

    /// Returns a healthy instance to the pool (unless it has served `recycle_after` calls).
    pub fn release(&self, mut lease: Lease) {
        lease.instance.calls += 1;
        let data = lease.instance.store.data_mut();
        data.call = None;
        data.host_wait = None;
        if lease.instance.calls >= self.recycle_after {
            // Its slot is free: a waiter may create an instance in its place.
            self.returned.notify_one();
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lease.instance);
        self.returned.notify_one();
        // The permit drops after the instance is idle, so a waiter finds it.
    }

    /// Runs `on-request` on a leased instance (on the plugin threads once it runs long, see
    /// [`super::offload`]) for the call `ctx` describes. On failure the instance is dropped.
    pub async fn on_request(
        self: &Arc<Self>,
        ctx: Arc<CallCtx>,
        info: RequestInfo,
    ) -> Result<RequestAction, Failure> {
        let this = self.clone();
        let wait = self.host_wait();
        super::offload::run(wait.clone(), async move {
            let mut lease = this.armed_lease(ctx, wait).await?;
            let i = &mut lease.instance;
            let r = i.guest.on_request(&mut i.store, info).await;
            this.settle(lease, r, "on-request")
        })
        .await
    }

    /// Runs `on-response`, as [`Version::on_request`] does.
    pub async fn on_response(
        self: &Arc<Self>,
        ctx: Arc<CallCtx>,
        info: ResponseInfo,
    ) -> Result<ResponseAction, Failure> {
        let this = self.clone();
        let wait = self.host_wait();
        super::offload::run(wait.clone(), async move {
            let mut lease = this.armed_lease(ctx, wait).await?;
            let i = &mut lease.instance;
            let r = i.guest.on_response(&mut i.store, info).await;
            this.settle(lease, r, "on-response")
        })
        .await
    }

    /// Runs the message hook of `dir`, as [`Version::on_request`] does.
    pub async fn on_message(
        self: &Arc<Self>,
        ctx: Arc<CallCtx>,
        dir: Direction,
        message: Message,
    ) -> Result<MessageAction, Failure> {
        let this = self.clone();
        let during = match dir {
            Direction::Request => "on-request-message",
            Direction::Response => "on-response-message",
        };
        let wait = self.host_wait();
        super::offload::run(wait.clone(), async move {
            let mut lease = this.armed_lease(ctx, wait).await?;
            let i = &mut lease.instance;
            let r = i.guest.on_message(&mut i.store, dir, &message).await;
            this.settle(lease, r, during)
        })
        .await
    }

    /// An instance with the deadline of one call set, the call's properties, and the flag its
    /// host functions raise while they wait.
    async fn armed_lease(
        &self,
        ctx: Arc<CallCtx>,
        wait: Option<HostWait>,
    ) -> Result<Lease, Failure> {
        let mut lease = self.lease().await?;
        lease.instance.arm(self.limits.timeout);
        let data = lease.instance.store.data_mut();
        data.call = Some(ctx);
        data.host_wait = wait;
        Ok(lease)
    }

    /// A hook call's "waiting for the host" flag, for a plugin whose host functions can wait (it
    /// has callouts, or its state is in Redis); `None` (nothing allocated) for any other.
    fn host_wait(&self) -> Option<HostWait> {
        self.shared.can_wait().then(HostWait::default)
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
            Err(e) => {
                let failure = Failure::classify(&e, &lease.instance.store, during);
                drop(lease);
                // Its slot is free: a waiter may create an instance in its place.
                self.returned.notify_one();
                Err(failure)
            }
        }
    }
}

impl Instance {
    /// Sets the deadline of the next call.
    fn arm(&mut self, timeout: Duration) {
        arm(&mut self.store, timeout);
    }
}

/// Starts the clock of a call (or instantiation, or `init`) that may use `timeout` of CPU time
/// (see [`Budget`]): the epoch callback checks it at the next tick (a new store's epoch deadline
/// is 0).
fn arm(store: &mut Store<HostState>, timeout: Duration) {
    store.data_mut().budget = Budget::start(timeout);
    store.data_mut().callouts_made = 0;
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
