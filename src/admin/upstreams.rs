//! Endpoint state for `/upstreams`, as JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::upstream::metrics::endpoint_rows;
use crate::upstream::UpstreamGroup;

/// Every endpoint's state, as JSON: `{ "upstreams": [ { "name", "endpoints": [ { "address",
/// "weight", "in_rotation", "healthy", "ejected", "ejected_for_ms", "ejections",
/// "slow_start_percent", "connect_failures", "in_flight", "connections" } ] } ] }`.
pub fn json(groups: &[Arc<UpstreamGroup>]) -> String {
    let all = endpoint_rows(groups);
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
