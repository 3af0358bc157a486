//! Per-plugin metrics: hook calls, rejections, status overrides, failures by kind, a latency
//! histogram of hook calls, instances created and reloads. Rendered on the admin `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::telemetry::{encode_family, Label, Named, Registry, Sample};

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.1,
];

/// The kinds of plugin failure, as labelled in metrics.
pub const KINDS: [&str; 7] = [
    "trap",
    "timeout",
    "memory",
    "invalid",
    "busy",
    "init",
    "instantiate",
];

/// The hooks, as labelled in metrics.
pub const HOOKS: [&str; 4] = [
    "on_request",
    "on_response",
    "on_request_message",
    "on_response_message",
];

/// Why a message was not shown to a plugin, as labelled in metrics: over `max_message_size`,
/// compressed in a way the gateway cannot read, or past `message_buffer_limit`.
pub const UNREAD: [&str; 3] = ["oversize", "encoding", "buffers_full"];

/// One plugin's counters.
#[derive(Default)]
pub struct Stats {
    /// Hook calls, in the order of [`HOOKS`].
    pub calls: [AtomicU64; 4],
    /// Calls the plugin rejected.
    pub rejections: AtomicU64,
    /// Statuses the plugin replaced.
    pub overrides: AtomicU64,
    /// Messages the plugin replaced.
    pub replacements: AtomicU64,
    /// Messages it could not be shown, in the order of [`UNREAD`].
    pub unread: [AtomicU64; 3],
    /// Bytes of partly received messages its calls hold now (bounded by
    /// `message_buffer_limit`).
    pub buffered: std::sync::atomic::AtomicUsize,
    /// Failures by kind (indexes of [`KINDS`]).
    pub errors: [AtomicU64; KINDS.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Reloads that failed (the old version kept serving).
    pub reload_failures: AtomicU64,
}

impl Stats {
    /// Records the duration of one hook call.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Every plugin's counters, for `/metrics`: `synapsor_plugin_calls_total{plugin,hook}`,
/// `…_rejections_total`, `…_status_overrides_total`, `…_errors_total{kind}`,
/// `…_reloads_total{result}` and the histogram `synapsor_plugin_call_seconds{plugin}`. A plugin
/// loaded again by a reload (plugin names are unique in a config) replaces the one before it,
/// so no series is shown twice.
#[derive(Clone, Default)]
pub struct PluginMetrics(Named<Stats>);

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginMetrics")
    }
}

impl PluginMetrics {
    /// Shows plugin `name`'s counters.
    pub fn add(registry: &Registry, name: Arc<str>, stats: Arc<Stats>) {
        let all = registry.collector("plugins", PluginMetrics::default);
        all.0.put(name, stats);
    }
}

impl Collector for PluginMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let all = self.0.all();
        for (name, help, rows) in families() {
            let samples = all.iter().flat_map(|(plugin, s)| {
                rows(s).into_iter().map(move |(key, value, n)| {
                    let mut labels = vec![("plugin", Label::from(plugin))];
                    if !key.is_empty() {
                        labels.push((key, Label::from(value)));
                    }
                    (labels, Sample::Counter(n))
                })
            });
            encode_family(&mut encoder, name, help, MetricType::Counter, samples)?;
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counts: Vec<Vec<u64>> = all
            .iter()
            .map(|(_, s)| s.buckets.iter().map(load).collect())
            .collect();
        let samples = all.iter().zip(&counts).map(|((plugin, s), counts)| {
            let value = Sample::Histogram {
                bounds: &BUCKETS,
                counts,
                count: load(&s.count),
                sum: load(&s.sum_nanos) as f64 / 1e9,
            };
            ([("plugin", Label::from(plugin))], value)
        });
        encode_family(
            &mut encoder,
            "synapsor_plugin_call_seconds",
            "Duration of plugin hook calls.",
            MetricType::Histogram,
            samples,
        )
    }
}

/// One plugin's counter rows: (extra label name, its value, the count); an empty name for none.
type Rows = fn(&Stats) -> Vec<(&'static str, &'static str, u64)>;

/// The counter families: name, help, and how to read a plugin's rows.
fn families() -> [(&'static str, &'static str, Rows); 7] {
    [
        ("synapsor_plugin_calls", "Plugin hook calls.", |s| {
            let hooks = HOOKS.iter().zip(&s.calls);
            hooks
                .map(|(h, n)| ("hook", *h, n.load(Ordering::Relaxed)))
                .collect()
        }),
        (
            "synapsor_plugin_message_replacements",
            "Messages a plugin replaced.",
            |s| vec![("", "", s.replacements.load(Ordering::Relaxed))],
        ),
        (
            "synapsor_plugin_messages_unread",
            "Messages a plugin's message hook could not be shown, by reason.",
            |s| {
                let reasons = UNREAD.iter().zip(&s.unread);
                reasons
                    .map(|(r, n)| ("reason", *r, n.load(Ordering::Relaxed)))
                    .collect()
            },
        ),
        (
            "synapsor_plugin_rejections",
            "Calls a plugin refused.",
            |s| vec![("", "", s.rejections.load(Ordering::Relaxed))],
        ),
        (
            "synapsor_plugin_status_overrides",
            "Statuses a plugin replaced.",
            |s| vec![("", "", s.overrides.load(Ordering::Relaxed))],
        ),
        ("synapsor_plugin_errors", "Plugin failures, by kind.", |s| {
            let kinds = KINDS.iter().zip(&s.errors);
            kinds
                .map(|(k, n)| ("kind", *k, n.load(Ordering::Relaxed)))
                .collect()
        }),
        (
            "synapsor_plugin_reloads",
            "Plugin reloads, by result.",
            |s| {
                vec![
                    ("result", "ok", s.reloads.load(Ordering::Relaxed)),
                    (
                        "result",
                        "failed",
                        s.reload_failures.load(Ordering::Relaxed),
                    ),
                ]
            },
        ),
    ]
}
