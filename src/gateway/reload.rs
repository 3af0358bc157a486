//! Reloading the config while serving: on SIGHUP, admin `POST /reload`, or (with
//! `reload.watch`) a change to the file, read once it stays the same for one poll. A file that
//! does not load or validate, or whose stages or sockets cannot be set up, changes nothing: the
//! error (file, line, field) is logged and returned. Otherwise only the difference is applied:
//!
//! - upstreams added start dialling; changed ones keep the endpoints that stay (with their
//!   state and connections), reweight them, add new ones and drain removed ones; removed
//!   groups drain;
//! - listeners added bind and serve; removed ones stop accepting, send GOAWAY and drain; a
//!   changed `listen` address is a removal plus an addition; changed stages, routes or limits
//!   take effect for the next stream on every open connection (HTTP/2 settings and
//!   `max_connections` for connections accepted from then on);
//! - `runtime` and `admin` need a restart: their changes are reported and left out.
//!
//! Reloads run one at a time, on a task of their own; the slow parts (reading the file,
//! resolving names, compiling plugins, binding) run on a blocking thread, and the switch-over
//! itself takes a lock only the reload task and inspection take.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::build::{self, Groups};
use super::listener::LiveListener;
use super::live::{lock, Live};
use crate::admin::{AdminState, AdminView, ReloadRequest};
use crate::config::{Config, ListenerConfig, UpstreamConfig};
use crate::server::{self, Serving};
use crate::telemetry::Registry;
use crate::tls::ClientTls;
use crate::upstream::discovery::{self, Resolved};
use crate::upstream::UpstreamGroup;

/// Asks the gateway's reload task to reload its config file. Cloning is cheap.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<ReloadRequest>,
}

impl Reloader {
    pub(super) fn start(live: Arc<Mutex<Live>>, path: PathBuf, admin: Arc<AdminState>) -> Reloader {
        let (tx, rx) = mpsc::channel(8);
        admin.set_reloader(tx.clone());
        // What the file holds now is what is running: read before `start` returns, so a change
        // made right after is seen as one.
        let seen = std::fs::read(&path).ok();
        tokio::spawn(run(live, path, seen, rx, admin));
        Reloader { tx }
    }

    /// Reloads now: a summary of what changed, or why nothing did.
    pub async fn reload(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(reply)
            .await
            .map_err(|_| "the gateway is stopping".to_string())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the reload was abandoned".into()))
    }
}

async fn run(
    live: Arc<Mutex<Live>>,
    path: PathBuf,
    mut seen: Option<Vec<u8>>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    admin: Arc<AdminState>,
) {
    let mut stop = lock(&live).stop.clone();
    let read = |p: &Path| std::fs::read(p).ok();
    let mut candidate: Option<Option<Vec<u8>>> = None;
    loop {
        let (watch, poll) = {
            let l = lock(&live);
            (l.config.reload.watch, l.config.reload.poll_interval.0)
        };
        tokio::select! {
            req = requests.recv() => {
                let Some(reply) = req else { return };
                seen = read(&path);
                candidate = None;
                let _ = reply.send(reload_once(&live, &path, &admin).await);
            }
            () = tokio::time::sleep(poll), if watch => {
                let now = read(&path);
                if now == seen {
                    candidate = None;
                } else if candidate.as_ref() == Some(&now) {
                    // The same new content twice in a row: the writer is done.
                    seen = now;
                    candidate = None;
                    tracing::info!(file = %path.display(), "config file changed; reloading");
                    let _ = reload_once(&live, &path, &admin).await;
                } else {
                    candidate = Some(now);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn reload_once(
    live: &Arc<Mutex<Live>>,
    path: &Path,
    admin: &AdminState,
) -> Result<String, String> {
    let snapshot = {
        let l = lock(live);
        Snapshot {
            config: l.config.clone(),
            groups: l.groups.clone(),
            registry: l.registry.clone(),
            workers: l.workers.len(),
        }
    };
    let file = path.to_path_buf();
    let prepared = tokio::task::spawn_blocking(move || {
        let loaded = crate::config::load(&file).map_err(|e| e.to_string())?;
        prepare(snapshot, loaded.config)
    })
    .await
    .unwrap_or_else(|e| Err(format!("reload failed: {e}")));
    let result = prepared.map(|p| apply(&mut lock(live), p));
    match &result {
        Ok(summary) => {
            admin.count_reload(true);
            tracing::info!(file = %path.display(), "config reloaded: {summary}");
        }
        Err(e) => {
            admin.count_reload(false);
            tracing::error!("config not reloaded; the running config stays: {e}");
        }
    }
    result
}

/// What preparing a reload needs from the running gateway.
struct Snapshot {
    config: Config,
    groups: Groups,
    registry: Arc<Registry>,
    workers: usize,
}

/// A reload ready to switch over: everything that can fail has been done.
struct Prepared {
    config: Config,
    added: Groups,
    changed: Vec<GroupChange>,
    removed: Vec<String>,
    listeners: Vec<ListenerPlan>,
    notes: Vec<String>,
}

/// A running group, its new config, fresh lookups of its names, and its TLS as loaded.
type GroupChange = (
    Arc<UpstreamGroup>,
    UpstreamConfig,
    Resolved,
    Option<Arc<ClientTls>>,
);

enum ListenerPlan {
    /// New stages or routes (and maybe settings).
    Stack(ListenerConfig, Vec<Serving>),
    /// Only limits changed: the current stacks with new settings.
    Settings(ListenerConfig, Arc<server::ListenerSettings>),
    /// A new listener, or one that moved to another address.
    Bind(ListenerConfig, std::net::TcpListener, Vec<Serving>),
    Remove(String),
}

fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_yaml::to_string(v).unwrap_or_default()
}

/// The part of a listener its stack is built from.
fn stack_shape(l: &ListenerConfig) -> impl PartialEq + '_ {
    (&l.upstream, &l.routes, &l.interceptors)
}

/// Everything of a reload that can fail, done before anything changes: the new groups built,
/// the changed ones' lookups and TLS, the listeners' new stacks and sockets.
fn prepare(old: Snapshot, mut config: Config) -> Result<Prepared, String> {
    let notes = keep_restart_only(&old.config, &mut config);
    let (added, changed, groups) = plan_groups(&old, &config)?;
    let removed: Vec<String> = old
        .groups
        .keys()
        .filter(|n| !groups.contains_key(*n))
        .cloned()
        .collect();
    let mut listeners = Vec::new();
    for l in &config.listeners {
        plan_listener(&old, l, &groups, &mut listeners)?;
    }
    for o in &old.config.listeners {
        if !config.listeners.iter().any(|l| l.name == o.name) {
            listeners.push(ListenerPlan::Remove(o.name.clone()));
        }
    }
    Ok(Prepared {
        config,
        added,
        changed,
        removed,
        listeners,
        notes,
    })
}

/// Puts the running `runtime` and `admin` sections back into `config` where it changed them
/// (they need a restart); a note for each.
fn keep_restart_only(running: &Config, config: &mut Config) -> Vec<String> {
    let mut notes = Vec::new();
    if config.runtime != running.runtime {
        notes.push("runtime changes need a restart (left as they were)".to_string());
        config.runtime = running.runtime.clone();
    }
    if config.admin != running.admin {
        notes.push("admin changes need a restart (left as they were)".to_string());
        config.admin = running.admin.clone();
    }
    notes
}

/// The upstream groups of `config`, as (added, changed, all): the new ones built (not started
/// yet), the running ones whose config changed with fresh lookups of their names and their TLS
/// loaded, and every group by name (the running ones kept).
fn plan_groups(
    old: &Snapshot,
    config: &Config,
) -> Result<(Groups, Vec<GroupChange>, Groups), String> {
    let mut added = Groups::new();
    let mut changed = Vec::new();
    let mut groups = Groups::new();
    for u in &config.upstreams {
        match old.groups.get(&u.name) {
            Some(g) => {
                let before = old.config.upstreams.iter().find(|o| o.name == u.name);
                if before != Some(u) {
                    let tls = build::upstream_tls(u).map_err(|e| format!("{e:#}"))?;
                    let fresh = discovery::resolve_blocking(&u.name, &discovery::dns_names(u));
                    changed.push((g.clone(), u.clone(), fresh, tls));
                }
                groups.insert(u.name.clone(), g.clone());
            }
            None => {
                let g = build::new_group(u, old.workers).map_err(|e| format!("{e:#}"))?;
                added.insert(u.name.clone(), g.clone());
                groups.insert(u.name.clone(), g);
            }
        }
    }
    Ok((added, changed, groups))
}

/// What listener `l` of the new config needs, pushed onto `plans` (over `groups`, all the new
/// config's groups): nothing when it did not change; a new stack, or new settings, when it stays
/// on its address; else a new socket and stack (after the removal of the one it replaces, when
/// it moved).
fn plan_listener(
    old: &Snapshot,
    l: &ListenerConfig,
    groups: &Groups,
    plans: &mut Vec<ListenerPlan>,
) -> Result<(), String> {
    let before = old.config.listeners.iter().find(|o| o.name == l.name);
    let plan = match before {
        Some(b) if b.listen == l.listen => {
            if stack_shape(b) != stack_shape(l) {
                let serving = build::listener_serving(l, groups, &old.registry, old.workers)
                    .map_err(|e| format!("{e:#}"))?;
                ListenerPlan::Stack(l.clone(), serving)
            } else if b != l {
                let settings = build::listener_settings(l).map_err(|e| format!("{e:#}"))?;
                ListenerPlan::Settings(l.clone(), settings)
            } else {
                return Ok(());
            }
        }
        _ => {
            let sock = server::bind(l.listen).map_err(|e| {
                format!("listener {:?}: cannot listen on {}: {e}", l.name, l.listen)
            })?;
            let serving = build::listener_serving(l, groups, &old.registry, old.workers)
                .map_err(|e| format!("{e:#}"))?;
            if before.is_some() {
                plans.push(ListenerPlan::Remove(l.name.clone()));
            }
            ListenerPlan::Bind(l.clone(), sock, serving)
        }
    };
    plans.push(plan);
    Ok(())
}

fn apply(live: &mut Live, p: Prepared) -> String {
    let mut said: Vec<String> = Vec::new();
    for (name, g) in &p.added {
        build::start_group(g, &live.workers, &live.stop, &live.exit);
        live.groups.insert(name.clone(), g.clone());
        said.push(format!("upstream {name} added"));
    }
    for (g, cfg, fresh, tls) in p.changed {
        g.update(&cfg, fresh, tls);
        said.push(format!("upstream {} changed", cfg.name));
    }
    for plan in p.listeners {
        match plan {
            ListenerPlan::Stack(cfg, serving) => {
                said.push(format!("listener {} changed", cfg.name));
                if let Some(l) = find(&mut live.listeners, &cfg.name) {
                    l.update(cfg, serving, &live.workers);
                }
            }
            ListenerPlan::Settings(cfg, settings) => {
                said.push(format!("listener {} settings changed", cfg.name));
                let n = live.workers.len();
                if let Some(l) = find(&mut live.listeners, &cfg.name) {
                    let serving = (0..n)
                        .map(|w| Serving {
                            stack: l.serving(w).stack.clone(),
                            settings: settings.clone(),
                        })
                        .collect();
                    l.update(cfg, serving, &live.workers);
                }
            }
            ListenerPlan::Bind(cfg, sock, serving) => {
                said.push(format!("listener {} listening on {}", cfg.name, cfg.listen));
                match LiveListener::start(cfg, sock, serving, &live.workers) {
                    Ok(l) => live.listeners.push(l),
                    Err(e) => tracing::error!(error = %e, "cannot start a listener"),
                }
            }
            ListenerPlan::Remove(name) => {
                if let Some(i) = live.listeners.iter().position(|l| l.cfg.name == name) {
                    live.listeners.remove(i).stop();
                    said.push(format!("listener {name} removed"));
                }
            }
        }
    }
    for name in p.removed {
        if let Some(g) = live.groups.remove(&name) {
            g.retire();
            said.push(format!("upstream {name} removed"));
        }
    }
    said.extend(p.notes);
    live.config = p.config;
    live.admin.set_view(AdminView {
        config_yaml: yaml(&live.config),
        upstreams: live.groups.values().cloned().collect(),
    });
    if said.is_empty() {
        "no changes".into()
    } else {
        said.join("; ")
    }
}

fn find<'a>(listeners: &'a mut [LiveListener], name: &str) -> Option<&'a mut LiveListener> {
    listeners.iter_mut().find(|l| l.cfg.name == name)
}
