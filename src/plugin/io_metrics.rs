//! `/metrics` for plugins' callouts and state:
//! `synapsor_plugin_callouts_total{plugin,target,result}` (`target` empty for calls refused
//! before a group was chosen: not allowed, over `max_per_hook`), the latency histogram
//! `synapsor_plugin_callout_seconds{plugin,target}` of calls sent,
//! `synapsor_plugin_state_refused_total{plugin,reason}` (`too_large`, `full`),
//! `synapsor_plugin_state_redis_errors_total{plugin}`, and the gauges
//! `synapsor_plugin_state_entries{plugin}` and `synapsor_plugin_state_bytes{plugin}` (the
//! gateway's own store).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::callout::{BUCKETS, RESULTS};
use super::host::PluginShared;
use crate::telemetry::{encode_family, Label, Named, Registry, Sample};

/// Every plugin's callout and state metrics; a plugin rebuilt by a reload replaces the one
/// before it.
#[derive(Clone, Default)]
pub struct PluginIoMetrics(Named<PluginShared>);

impl std::fmt::Debug for PluginIoMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginIoMetrics")
    }
}

impl PluginIoMetrics {
    /// Shows `shared`'s callouts and state.
    pub fn add(registry: &Registry, shared: Arc<PluginShared>) {
        let all = registry.collector("plugin_io", PluginIoMetrics::default);
        all.0.put(shared.name.clone(), shared);
    }
}

impl Collector for PluginIoMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let all = self.0.all();
        encode_callouts(&mut encoder, &all)?;
        encode_state(&mut encoder, &all)
    }
}

type Entries = [(Arc<str>, Arc<PluginShared>)];

fn encode_callouts(encoder: &mut DescriptorEncoder, all: &Entries) -> std::fmt::Result {
    let targets: Vec<_> = all
        .iter()
        .flat_map(|(plugin, s)| {
            let stats = s.callouts.as_ref().map(|c| c.stats()).unwrap_or_default();
            stats
                .into_iter()
                .map(move |(t, st)| (plugin.clone(), t, st))
        })
        .collect();
    let labels =
        |p: &Arc<str>, t: &Arc<str>| [("plugin", Label::from(p)), ("target", Label::from(t))];
    encode_family(
        encoder,
        "synapsor_plugin_callouts",
        "Plugin callouts to upstream groups, by result.",
        MetricType::Counter,
        targets.iter().flat_map(|(p, t, st)| {
            RESULTS.iter().zip(&st.results).filter_map(move |(r, n)| {
                let n = n.load(Ordering::Relaxed);
                let [a, b] = labels(p, t);
                (n > 0 || !t.is_empty())
                    .then(|| ([a, b, ("result", Label::from(*r))], Sample::Counter(n)))
            })
        }),
    )?;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counts: Vec<Vec<u64>> = targets
        .iter()
        .map(|(_, _, st)| st.buckets.iter().map(load).collect())
        .collect();
    encode_family(
        encoder,
        "synapsor_plugin_callout_seconds",
        "Time from sending a plugin's callout to its whole answer (or timeout).",
        MetricType::Histogram,
        targets
            .iter()
            .zip(&counts)
            .filter(|((_, t, _), _)| !t.is_empty())
            .map(|((p, t, st), counts)| {
                let value = Sample::Histogram {
                    bounds: &BUCKETS,
                    counts,
                    count: load(&st.count),
                    sum: load(&st.sum_nanos) as f64 / 1e9,
                };
                (labels(p, t), value)
            }),
    )
}

fn encode_state(encoder: &mut DescriptorEncoder, all: &Entries) -> std::fmt::Result {
    let plugin = |p: &Arc<str>| ("plugin", Label::from(p));
    encode_family(
        encoder,
        "synapsor_plugin_state_refused",
        "Plugin state writes refused, by reason.",
        MetricType::Counter,
        all.iter().flat_map(|(p, s)| {
            let refused = &s.state.stats.refused;
            [("too_large", &refused[0]), ("full", &refused[1])].map(|(r, n)| {
                let v = Sample::Counter(n.load(Ordering::Relaxed));
                ([plugin(p), ("reason", Label::from(r))], v)
            })
        }),
    )?;
    encode_family(
        encoder,
        "synapsor_plugin_state_redis_errors",
        "Plugin state operations Redis could not answer (then on_redis_error applied).",
        MetricType::Counter,
        all.iter()
            .filter(|(_, s)| s.state.in_redis())
            .map(|(p, s)| {
                let n = s.state.stats.redis_errors.load(Ordering::Relaxed);
                ([plugin(p)], Sample::Counter(n))
            }),
    )?;
    let usage: Vec<_> = all.iter().map(|(p, s)| (p, s.state.usage())).collect();
    encode_family(
        encoder,
        "synapsor_plugin_state_entries",
        "Keys in a plugin's state in the gateway's memory (expired ones not swept yet included).",
        MetricType::Gauge,
        usage
            .iter()
            .map(|(p, (n, _))| ([plugin(p)], Sample::Gauge(*n as i64))),
    )?;
    encode_family(
        encoder,
        "synapsor_plugin_state_bytes",
        "Bytes of keys and values (and 64 per entry) in a plugin's state in the gateway's memory.",
        MetricType::Gauge,
        usage
            .iter()
            .map(|(p, (_, b))| ([plugin(p)], Sample::Gauge(*b as i64))),
    )
}
