//! Loading a plugin (read, compile, link, `init` one instance to prove it works), reloading it
//! when its file changes or on SIGHUP, and the one watcher thread that notices changes. All of
//! it runs off the request path; a reload swaps the new version in atomically, and calls in
//! flight finish on the version they started with.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::bindings::Hooks;
use super::callout::Callees;
use super::compat::Pre;
use super::engine::{content_key, host, ContentKey};
use super::host::PluginShared;
use super::instance::{Limits, Version, VersionParts};
use super::stats::Stats;
use super::Failure;
use crate::config::{Isolation, WasmConfig};
use crate::telemetry::Registry;

/// A loaded plugin: its current version and everything that outlives a reload.
pub struct Plugin {
    /// The plugin's configuration.
    pub cfg: WasmConfig,
    /// Its counters and name, shared by all versions.
    pub shared: Arc<PluginShared>,
    /// Its metrics.
    pub stats: Arc<Stats>,
    /// The version new calls use.
    pub current: ArcSwap<Version>,
    slots: Arc<Semaphore>,
    config_json: Arc<str>,
    /// (modified time, length, content hash) of the file the current version came from.
    seen: Mutex<FileMark>,
    generation: AtomicU64,
    /// Held while a reload runs, so the watcher and SIGHUP never build two versions at once.
    reloading: Mutex<()>,
    /// Unix seconds of the last failure warning (failures are logged at most once a second).
    pub last_warn: AtomicU64,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct FileMark {
    modified: Option<SystemTime>,
    content: ContentKey,
}

/// What `synapsor check` prints about a plugin.
pub struct Description {
    /// The component's imports.
    pub imports: Vec<String>,
    /// The component's exports.
    pub exports: Vec<String>,
    /// Whether WASI p2 is linked for it.
    pub wasi: bool,
    /// The contract version it was built against: `0.1` or `0.2`.
    pub contract: &'static str,
    /// The message hooks its `init` asked for: `request`, `response`.
    pub message_hooks: Vec<&'static str>,
    /// The linear memory of its first instance once `init` returned, in bytes.
    pub memory: usize,
    /// How long compiling it took (zero when this process had compiled the same bytes).
    pub compile: Duration,
    /// How long creating its first instance and running `init` took.
    pub instantiate: Duration,
}

impl Description {
    /// What a user should change about `cfg` given what an instance costs: a new instance
    /// holding over 75% of `memory_limit` (calls have little room left), or `per_request`
    /// creating an instance that takes over 1 ms — an interpreter — for every call.
    pub fn warnings(&self, cfg: &WasmConfig) -> Vec<String> {
        let mut out = Vec::new();
        let share = self.memory as f64 / cfg.memory_limit.0 as f64;
        if share > 0.75 {
            out.push(format!(
                "a new instance already uses {:.0}% of memory_limit ({}), leaving calls little \
                 room: raise memory_limit",
                share * 100.0,
                cfg.memory_limit
            ));
        }
        let ms = self.instantiate.as_secs_f64() * 1e3;
        if cfg.isolation == Isolation::PerRequest && ms > 1.0 {
            out.push(format!(
                "isolation per_request creates an instance for every call ({ms:.1} ms each \
                 here): isolation reuse serves calls from instances kept warm"
            ));
        }
        out
    }
}

/// Runs a future to completion on a thread of its own (loading happens at start-up, possibly
/// inside a runtime, and on the watcher thread).
fn run_off_thread<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
        })
        .join()
    })
    .expect("plugin loader thread panicked")
    .expect("plugin loader runtime")
}

fn mark(path: &Path, bytes: &[u8]) -> FileMark {
    FileMark {
        modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        content: content_key(bytes),
    }
}

impl Plugin {
    /// Loads a plugin whose metrics are shown nowhere and that can call out to no upstream
    /// group (benchmarks); see [`Plugin::load_in`].
    pub fn load(cfg: &WasmConfig) -> Result<Arc<Plugin>, String> {
        Plugin::load_in(cfg, &Registry::default(), &Callees::new())
    }

    /// Loads a plugin (the metrics it defines shown on `registry`, its callouts to the groups
    /// of `callees` it may call): fails with a message naming the file when it cannot be read,
    /// compiled, linked or `init`ed.
    pub(crate) fn load_in(
        cfg: &WasmConfig,
        registry: &Registry,
        callees: &Callees,
    ) -> Result<Arc<Plugin>, String> {
        let config_json: Arc<str> = cfg.config_json()?.into();
        let shared = PluginShared::new(cfg, registry, callees);
        let slots = Arc::new(Semaphore::new(cfg.max_instances as usize));
        let bytes = read(&cfg.path)?;
        let (version, d) = build(cfg, &bytes, &shared, &slots, &config_json, 1)?;
        let plugin = Arc::new(Plugin {
            cfg: cfg.clone(),
            shared,
            stats: Arc::new(Stats::default()),
            current: ArcSwap::from_pointee(version),
            slots,
            config_json,
            seen: Mutex::new(mark(&cfg.path, &bytes)),
            generation: AtomicU64::new(1),
            reloading: Mutex::new(()),
            last_warn: AtomicU64::new(0),
        });
        watch(&plugin);
        tracing::info!(
            plugin = %cfg.name,
            path = %cfg.path.display(),
            instance_memory_kib = d.memory >> 10,
            instantiate_ms = d.instantiate.as_secs_f64() * 1e3,
            compile_ms = d.compile.as_millis() as u64,
            "plugin loaded"
        );
        for w in d.warnings(cfg) {
            tracing::warn!(plugin = %cfg.name, "{w}");
        }
        Ok(plugin)
    }

    /// Reloads the plugin if its file's content changed. `Ok(true)` when a new version now
    /// serves; on error the old version keeps serving.
    pub fn reload(&self) -> Result<bool, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = read(&self.cfg.path)?;
        let now = mark(&self.cfg.path, &bytes);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.content == now.content {
                *seen = now;
                return Ok(false);
            }
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let built = build(
            &self.cfg,
            &bytes,
            &self.shared,
            &self.slots,
            &self.config_json,
            generation,
        );
        // A broken file is not retried until it changes again.
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = now;
        match built {
            Ok((version, _)) => {
                self.generation.store(generation, Ordering::Relaxed);
                self.current.store(Arc::new(version));
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(plugin = %self.cfg.name, generation, "plugin reloaded");
                Ok(true)
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %self.cfg.name, "reload failed, the previous version keeps serving: {e}");
                Err(e)
            }
        }
    }

    /// True when the file changed since the current version was loaded (by time or length).
    fn file_changed(&self) -> bool {
        let meta = std::fs::metadata(&self.cfg.path).ok();
        let seen = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match meta {
            Some(m) => m.modified().ok() != seen.modified || m.len() as usize != seen.content.0,
            None => false,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read plugin {}: {e}", path.display()))
}

/// Compiles, links and `init`s one instance of a version; returns it (with the instance idle,
/// ready for the first call) and a description.
fn build(
    cfg: &WasmConfig,
    bytes: &[u8],
    shared: &Arc<PluginShared>,
    slots: &Arc<Semaphore>,
    config: &Arc<str>,
    generation: u64,
) -> Result<(Version, Description), String> {
    let path = cfg.path.display();
    let host = host()?;
    let started = Instant::now();
    let component = host
        .compile(bytes)
        .map_err(|e| format!("plugin {path} is not a valid component: {e}"))?;
    let wasi = host.imports_wasi(&component);
    let linker = if wasi { &host.wasi } else { &host.plain };
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("plugin {path} needs imports the gateway does not offer: {e:#}"))?;
    let (pre, contract) = Pre::new(pre).map_err(|e| {
        format!("plugin {path} does not export the synapsor:plugin/interceptor world ({e})")
    })?;
    let (imports, exports) = host.describe(&component);
    let version = Version::new(VersionParts {
        pre,
        wasi,
        config: config.clone(),
        shared: shared.clone(),
        limits: Limits {
            memory: cfg.memory_limit.0 as usize,
            timeout: cfg.timeout.0,
        },
        slots: slots.clone(),
        recycle_after: match cfg.isolation {
            Isolation::Reuse => cfg.recycle_after,
            Isolation::PerRequest => 1,
        },
        generation,
    });
    let compile = started.elapsed();
    let started = Instant::now();
    let first = run_off_thread(version.instantiate())
        .map_err(|f| format!("plugin {path}: {f}{}", first_instance_hint(cfg, &f)))?;
    let instantiate = started.elapsed();
    let memory = first.linear_memory();
    if cfg.isolation == Isolation::Reuse {
        version.keep(first);
    }
    let hooks = version.hooks();
    let message_hooks = [
        (Hooks::REQUEST_MESSAGES, "request"),
        (Hooks::RESPONSE_MESSAGES, "response"),
    ]
    .into_iter()
    .filter(|(h, _)| hooks.contains(*h))
    .map(|(_, name)| name)
    .collect();
    Ok((
        version,
        Description {
            imports,
            exports,
            wasi,
            contract,
            message_hooks,
            memory,
            compile,
            instantiate,
        },
    ))
}

/// Which limit to raise when the first instance of a plugin fails for want of one (an
/// interpreter — a Python or JavaScript plugin — needs more than a compiled plugin).
fn first_instance_hint(cfg: &WasmConfig, f: &Failure) -> String {
    match f {
        Failure::Memory(_) => format!(
            "; it needs more linear memory than its memory_limit ({}): raise memory_limit \
             (at most 256MiB)",
            cfg.memory_limit
        ),
        Failure::Timeout(during) => format!(
            "; creating an instance and running init may each take 10 × timeout (at least \
             100 ms; timeout is {:?}), and {during} took longer: raise timeout",
            cfg.timeout.0
        ),
        _ => String::new(),
    }
}

/// Compiles a plugin and `init`s one instance, for `synapsor check`.
pub fn describe(cfg: &WasmConfig) -> Result<Description, String> {
    let bytes = read(&cfg.path)?;
    // Checked alone: no upstream groups to call, and no Redis connection opened.
    let mut alone = cfg.clone();
    alone.state.redis = None;
    let shared = PluginShared::new(&alone, &Registry::default(), &Callees::new());
    let slots = Arc::new(Semaphore::new(1));
    let config: Arc<str> = cfg.config_json()?.into();
    build(cfg, &bytes, &shared, &slots, &config, 1).map(|(_, d)| d)
}

/// Plugins the watcher looks after.
static WATCHED: Mutex<Vec<Weak<Plugin>>> = Mutex::new(Vec::new());
static WATCHER: OnceLock<()> = OnceLock::new();

/// How often the watcher looks at plugin files.
const POLL: Duration = Duration::from_millis(500);

fn watch(plugin: &Arc<Plugin>) {
    WATCHED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(plugin));
    WATCHER.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("synapsor-plugin-watch".into())
            .spawn(|| loop {
                std::thread::sleep(POLL);
                for p in live() {
                    if p.cfg.watch && p.file_changed() {
                        let _ = p.reload();
                    }
                }
            });
    });
}

fn live() -> Vec<Arc<Plugin>> {
    let mut w = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
    w.retain(|p| p.strong_count() > 0);
    w.iter().filter_map(Weak::upgrade).collect()
}

/// Reloads every loaded plugin whose file changed (SIGHUP). Blocking: call it off the reactor.
pub fn reload_all() {
    for p in live() {
        let _ = p.reload();
    }
}
