//! Building what workers serve: each upstream group with one instance per worker, and each
//! listener's stack (stages, routes, forwarder) per worker.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{ListenerConfig, UpstreamConfig};
use tower::Service;

use crate::plugin::callout::Callees;
use crate::proxy::{Forward, Stack, Upstreamed};
use crate::route::Router;
use crate::server::worker::Worker;
use crate::server::{ListenerSettings, Serving};
use crate::stack::{CallFuture, Callee};
use crate::stage::Stages;
use crate::telemetry::Registry;
use crate::tls::{ClientTls, ServerTls};
use crate::upstream::discovery;
use crate::upstream::UpstreamGroup;

/// Upstream groups by name.
pub type Groups = BTreeMap<String, Arc<UpstreamGroup>>;

/// A group for `cfg` with one instance per worker, its `dns://` endpoints resolved (blocking)
/// and its TLS files loaded (the error names the upstream and the file). Nothing runs yet:
/// see [`start_group`].
pub fn new_group(cfg: &UpstreamConfig, workers: usize) -> anyhow::Result<Arc<UpstreamGroup>> {
    let tls = upstream_tls(cfg)?;
    let resolved = discovery::resolve_blocking(&cfg.name, &discovery::dns_names(cfg));
    let group = UpstreamGroup::new(cfg, resolved, tls);
    for _ in 0..workers {
        group.instantiate();
    }
    Ok(group)
}

/// The TLS of upstream `cfg`, loaded from its files.
pub fn upstream_tls(cfg: &UpstreamConfig) -> anyhow::Result<Option<Arc<ClientTls>>> {
    cfg.tls
        .as_ref()
        .map(ClientTls::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("upstream {:?}: tls: {e}", cfg.name))
}

/// The settings of listener `cfg`, with its TLS files loaded (the error names the listener
/// and the file).
pub fn listener_settings(cfg: &ListenerConfig) -> anyhow::Result<Arc<ListenerSettings>> {
    let tls = cfg
        .tls
        .as_ref()
        .map(ServerTls::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("listener {:?}: tls: {e}", cfg.name))?;
    Ok(Arc::new(ListenerSettings::from_config(cfg, tls)))
}

/// Starts a group: pool maintenance on each worker's runtime, health checks and DNS
/// re-resolution on the current one.
pub fn start_group(
    group: &Arc<UpstreamGroup>,
    workers: &[Worker],
    stop: &watch::Receiver<bool>,
    exit: &watch::Receiver<bool>,
) {
    for (up, w) in group.instances().iter().zip(workers) {
        up.start(&w.runtime, exit);
    }
    group.start_health(stop);
    group.watch_dns(stop.clone());
}

/// What each worker serves listener `cfg` with (stages are built once and shared by the
/// workers; routes point at each worker's own upstream instances). Fails when a stage cannot
/// be built (a keys file or plugin that cannot be loaded), naming the listener.
pub fn listener_serving(
    cfg: &ListenerConfig,
    groups: &Groups,
    registry: &Arc<Registry>,
    workers: usize,
) -> anyhow::Result<Vec<Serving>> {
    let callees = callees(groups);
    let stages = Stages::new(&cfg.interceptors, &cfg.name, registry, &callees)
        .map_err(|e| anyhow::anyhow!("listener {:?}: {e}", cfg.name))?;
    let route_stages = cfg
        .routes
        .iter()
        .enumerate()
        .map(|(r, route)| {
            Stages::new(&route.interceptors, &cfg.name, registry, &callees)
                .map_err(|e| anyhow::anyhow!("listener {:?}: routes[{r}].{e}", cfg.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let settings = listener_settings(cfg)?;
    Ok((0..workers)
        .map(|w| {
            let router = Router::new(&cfg.routes, cfg.upstream.as_deref(), |name| {
                groups[name].instances()[w].clone()
            });
            Serving {
                stack: compose(&stages, &route_stages, router),
                settings: settings.clone(),
            }
        })
        .collect())
}

/// Every upstream group as plugins call it out ([`Callee`]): through the worker's own
/// instance of the group, as a client's call to it is forwarded.
fn callees(groups: &Groups) -> Callees {
    groups
        .iter()
        .map(|(name, g)| {
            let callee: Arc<dyn Callee> = Arc::new(GroupCallee(g.clone()));
            (name.clone(), callee)
        })
        .collect()
}

/// An upstream group as a plugin's callout target.
struct GroupCallee(Arc<UpstreamGroup>);

impl GroupCallee {
    fn instance(&self, worker: usize) -> Option<Arc<crate::upstream::Upstream>> {
        let all = self.0.instances();
        all.get(worker % all.len().max(1)).cloned()
    }
}

impl Callee for GroupCallee {
    fn call(&self, worker: usize, req: crate::stack::Request) -> CallFuture {
        match self.instance(worker) {
            Some(up) => Upstreamed(up).call(req),
            None => Box::pin(std::future::ready(Err(format!(
                "upstream group {:?} has no instance",
                self.0.name()
            )
            .into()))),
        }
    }

    fn runtime(&self, worker: usize) -> Option<tokio::runtime::Handle> {
        self.instance(worker)?.runtime()
    }
}

/// The one place stages are wrapped around the forwarder (as linkerd2-proxy composes its stacks
/// in one place): each route's own stages around its group, then the listener's stages (first =
/// outermost) around the forwarder; no stages at all leaves the forwarder unboxed.
fn compose(stages: &Stages, route_stages: &[Stages], router: Router) -> Stack {
    let routed = (0..router.routes())
        .map(|i| {
            let own = route_stages.get(i).filter(|s| !s.is_empty())?;
            Some(own.wrap(Upstreamed(router.upstream(i).clone())))
        })
        .collect();
    let forward = Forward::new(router, routed);
    if stages.is_empty() {
        return Stack::Plain(forward);
    }
    Stack::Layered(stages.wrap(forward))
}
