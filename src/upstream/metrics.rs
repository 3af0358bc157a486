//! The upstream side's metrics, written from its state at each scrape: per endpoint
//! `synapsor_upstream_connections` (open pooled connections, over all workers),
//! `synapsor_upstream_streams` (streams open), `synapsor_endpoint_up` (in rotation),
//! `synapsor_endpoint_healthy`, `synapsor_endpoint_ejected` and
//! `synapsor_endpoint_ejections_total`, each labelled `upstream` and `endpoint`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::endpoint::EndpointState;
use super::UpstreamGroup;
use crate::telemetry::{encode_family, Label, Registry, Sample};

/// One endpoint as reported: its group, its shared state, and its connections over all workers.
pub struct EndpointRow {
    /// The group's name.
    pub upstream: Arc<str>,
    /// The endpoint's shared state.
    pub state: Arc<EndpointState>,
    /// Open pooled connections to it, over all workers.
    pub connections: usize,
}

/// Every endpoint of `groups`, as of now.
pub fn endpoint_rows(groups: &[Arc<UpstreamGroup>]) -> Vec<EndpointRow> {
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
            rows.push(EndpointRow {
                upstream: g.name().clone(),
                state,
                connections,
            });
        }
    }
    rows
}

/// The collector of every upstream group's endpoint metrics; the groups change with reloads.
#[derive(Clone, Default)]
pub struct EndpointMetrics(Arc<Mutex<Vec<Arc<UpstreamGroup>>>>);

impl std::fmt::Debug for EndpointMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointMetrics")
    }
}

impl EndpointMetrics {
    /// The gateway's collector, registered in `registry` the first time.
    pub fn of(registry: &Registry) -> EndpointMetrics {
        registry.collector("upstream_endpoints", EndpointMetrics::default)
    }

    /// Reports on `groups` from now on.
    pub fn set(&self, groups: Vec<Arc<UpstreamGroup>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = groups;
    }
}

impl Collector for EndpointMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let groups = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rows = endpoint_rows(&groups);
        type Get = fn(&EndpointRow) -> u64;
        let families: [(&str, MetricType, &str, Get); 6] = [
            (
                "synapsor_upstream_connections",
                MetricType::Gauge,
                "Open pooled connections, over all workers.",
                |r| r.connections as u64,
            ),
            (
                "synapsor_upstream_streams",
                MetricType::Gauge,
                "Streams open on each endpoint.",
                |r| r.state.in_flight.load(Ordering::Relaxed),
            ),
            (
                "synapsor_endpoint_up",
                MetricType::Gauge,
                "1 while the endpoint is in rotation.",
                |r| u64::from(r.state.available()),
            ),
            (
                "synapsor_endpoint_healthy",
                MetricType::Gauge,
                "0 while active health checks keep the endpoint out.",
                |r| u64::from(r.state.health.healthy()),
            ),
            (
                "synapsor_endpoint_ejected",
                MetricType::Gauge,
                "1 while outlier detection keeps the endpoint out.",
                |r| u64::from(r.state.ejection.ejected()),
            ),
            (
                "synapsor_endpoint_ejections",
                MetricType::Counter,
                "Outlier ejections of the endpoint.",
                |r| r.state.ejection.total(),
            ),
        ];
        for (name, kind, help, get) in families {
            let samples = rows.iter().map(|r| {
                let labels = [
                    ("upstream", Label::from(&r.upstream)),
                    ("endpoint", Label::from(&r.state.address)),
                ];
                let v = get(r);
                let value = match kind {
                    MetricType::Counter => Sample::Counter(v),
                    _ => Sample::Gauge(v as i64),
                };
                (labels, value)
            });
            encode_family(&mut encoder, name, help, kind, samples)?;
        }
        Ok(())
    }
}
