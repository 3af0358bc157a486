//! The process's one wasmtime [`Engine`] (pooling allocator, epoch interruption), its epoch
//! ticker, the two linkers (with and without WASI p2), and compilation with a cache keyed by the
//! component file's hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v1, v2};
use super::host::HostState;
use crate::config::{MAX_MEMORY_LIMIT, MAX_TOTAL_INSTANCES};

pub use super::budget::TICK;

/// The engine, its linkers and the compiled-component cache.
pub struct Host {
    /// The engine every plugin runs on.
    pub engine: Engine,
    /// The linker for components that import only `synapsor:plugin/host` (0.1.x or 0.2.x).
    pub plain: Linker<HostState>,
    /// The linker that also offers WASI p2 (for components that import `wasi:*`).
    pub wasi: Linker<HostState>,
    cache: Mutex<HashMap<ContentKey, Component>>,
}

/// Identifies a component file's content: its length and a hash of its bytes.
pub type ContentKey = (usize, u64);

/// The [`ContentKey`] of `bytes`.
pub fn content_key(bytes: &[u8]) -> ContentKey {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    (bytes.len(), h.finish())
}

static HOST: OnceLock<Result<Host, String>> = OnceLock::new();

/// The process's plugin host, built on first use.
pub fn host() -> Result<&'static Host, String> {
    HOST.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<Host, String> {
    let slots = 2 * MAX_TOTAL_INSTANCES;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(8 * slots)
        .total_memories(2 * slots)
        .total_tables(4 * slots)
        .total_stacks(slots)
        .max_memory_size(MAX_MEMORY_LIMIT as usize);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| format!("wasmtime engine: {e:#}"))?;
    let mut plain = Linker::new(&engine);
    type Data = wasmtime::component::HasSelf<HostState>;
    v2::Interceptor::add_to_linker::<HostState, Data>(&mut plain, |s| s)
        .map_err(|e| format!("linking the 0.2 host interface: {e:#}"))?;
    v1::Interceptor::add_to_linker::<HostState, Data>(&mut plain, |s| s)
        .map_err(|e| format!("linking the 0.1 host interface: {e:#}"))?;
    let mut wasi = plain.clone();
    wasmtime_wasi::p2::add_to_linker_async(&mut wasi)
        .map_err(|e| format!("linking WASI p2: {e:#}"))?;
    let ticker = engine.clone();
    std::thread::Builder::new()
        .name("synapsor-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            ticker.increment_epoch();
        })
        .map_err(|e| format!("starting the epoch ticker: {e}"))?;
    Ok(Host {
        engine,
        plain,
        wasi,
        cache: Mutex::new(HashMap::new()),
    })
}

impl Host {
    /// Compiles a component (or returns the one already compiled from the same bytes). Slow
    /// (tens of milliseconds): call it off the request path.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        let key = content_key(bytes);
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let c = Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: old versions of reloaded plugins are forgotten beyond 64 entries.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, c.clone());
        Ok(c)
    }

    /// The component's imports and exports, as `name` strings (for `synapsor check`).
    pub fn describe(&self, c: &Component) -> (Vec<String>, Vec<String>) {
        let ty = c.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        (imports, exports)
    }

    /// True when the component imports any WASI interface.
    pub fn imports_wasi(&self, c: &Component) -> bool {
        c.component_type()
            .imports(&self.engine)
            .any(|(n, _)| n.starts_with("wasi:"))
    }
}
