//! Endpoint state for `/upstreams` (JSON) and `/metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::stage::metrics::escape;
use crate::upstream::endpoint::EndpointState;
use crate::upstream::UpstreamGroup;

/// One endpoint as reported: its group, its shared state, and its connections over all workers.
struct Row {
    upstream: Arc<str>,
    state: Arc<EndpointState>,
    connections: usize,
}

fn rows(groups: &[Arc<UpstreamGroup>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for g in groups {
        let instances = g.instances();
        for (_, state) in g.endpoints() {
            let connections = instances
                .iter()
                .map(|u| {
                    u.members()
                        .endpoints
                        .iter()
                        .filter(|e| Arc::ptr_eq(&e.state, &state))
                        .map(|e| e.pool.open_connections())
                        .sum::<usize>()
                })
                .sum();
            rows.push(Row {
                upstream: g.name().clone(),
                state,
                connections,
            });
        }
    }
    rows
}

/// Every endpoint's state, as JSON: `{ "upstreams": [ { "name", "endpoints": [ { "address",
/// "weight", "in_rotation", "healthy", "ejected", "ejected_for_ms", "ejections",
/// "slow_start_percent", "connect_failures", "in_flight", "connections" } ] } ] }`.
pub fn json(groups: &[Arc<UpstreamGroup>]) -> String {
    let all = rows(groups);
    let out: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| {
            let endpoints: Vec<serde_json::Value> = all
                .iter()
                .filter(|r| Arc::ptr_eq(&r.upstream, g.name()))
                .map(|r| {
                    let ep = &r.state;
                    serde_json::json!({
                        "address": &*ep.address,
                        "weight": ep.weight.get(),
                        "in_rotation": ep.available(),
                        "healthy": ep.health.healthy(),
                        "ejected": ep.ejection.ejected(),
                        "ejected_for_ms": ep.ejection.ejected_for().as_millis() as u64,
                        "ejections": ep.ejection.total(),
                        "slow_start_percent": ep.weight.ramp_share().unwrap_or(100),
                        "connect_failures": ep.reach.failures(),
                        "in_flight": ep.in_flight.load(Ordering::Relaxed),
                        "connections": r.connections,
                    })
                })
                .collect();
            serde_json::json!({ "name": &**g.name(), "endpoints": endpoints })
        })
        .collect();
    let mut s = serde_json::json!({ "upstreams": out }).to_string();
    s.push('\n');
    s
}

/// Pool and endpoint state of every upstream, in Prometheus text.
pub fn render(groups: &[Arc<UpstreamGroup>], out: &mut String) {
    let rows = rows(groups);
    type Get = fn(&Row) -> u64;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "synapsor_upstream_connections",
            "gauge",
            "Open pooled connections, over all workers.",
            |r| r.connections as u64,
        ),
        (
            "synapsor_upstream_streams",
            "gauge",
            "Streams open on each endpoint.",
            |r| r.state.in_flight.load(Ordering::Relaxed),
        ),
        (
            "synapsor_endpoint_up",
            "gauge",
            "1 while the endpoint is in rotation.",
            |r| u64::from(r.state.available()),
        ),
        (
            "synapsor_endpoint_healthy",
            "gauge",
            "0 while active health checks keep the endpoint out.",
            |r| u64::from(r.state.health.healthy()),
        ),
        (
            "synapsor_endpoint_ejected",
            "gauge",
            "1 while outlier detection keeps the endpoint out.",
            |r| u64::from(r.state.ejection.ejected()),
        ),
        (
            "synapsor_endpoint_ejections_total",
            "counter",
            "Outlier ejections of the endpoint.",
            |r| r.state.ejection.total(),
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &rows {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\",endpoint=\"{}\"}} {}",
                escape(&r.upstream),
                escape(&r.state.address),
                get(r)
            );
        }
    }
}
