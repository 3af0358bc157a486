//! Per-plugin metrics: hook calls, rejections, status overrides, failures by kind, a latency
//! histogram of hook calls, instances created and reloads. Rendered on the admin `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::stage::metrics::{escape, write_histogram};
use std::time::Duration;

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

/// One plugin's counters.
#[derive(Default)]
pub struct Stats {
    /// Hook calls: `[on-request, on-response]`.
    pub calls: [AtomicU64; 2],
    /// Calls the plugin rejected.
    pub rejections: AtomicU64,
    /// Statuses the plugin replaced.
    pub overrides: AtomicU64,
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

/// The Prometheus text of these plugins' stats.
pub fn render(all: &[(Arc<str>, Arc<Stats>)], out: &mut String) {
    if all.is_empty() {
        return;
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    // Each counter family: its name, help, and per plugin the (extra label, value) rows.
    type Rows = fn(&Stats) -> Vec<(String, u64)>;
    let families: [(&str, &str, Rows); 5] = [
        ("synapsor_plugin_calls_total", "Plugin hook calls.", |s| {
            ["on_request", "on_response"]
                .iter()
                .zip(&s.calls)
                .map(|(h, n)| (format!(",hook=\"{h}\""), n.load(Ordering::Relaxed)))
                .collect()
        }),
        (
            "synapsor_plugin_rejections_total",
            "Calls a plugin refused.",
            |s| vec![(String::new(), s.rejections.load(Ordering::Relaxed))],
        ),
        (
            "synapsor_plugin_status_overrides_total",
            "Statuses a plugin replaced.",
            |s| vec![(String::new(), s.overrides.load(Ordering::Relaxed))],
        ),
        (
            "synapsor_plugin_errors_total",
            "Plugin failures, by kind.",
            |s| {
                KINDS
                    .iter()
                    .zip(&s.errors)
                    .map(|(k, n)| (format!(",kind=\"{k}\""), n.load(Ordering::Relaxed)))
                    .collect()
            },
        ),
        (
            "synapsor_plugin_reloads_total",
            "Plugin reloads, by result.",
            |s| {
                vec![
                    (",result=\"ok\"".into(), s.reloads.load(Ordering::Relaxed)),
                    (
                        ",result=\"failed\"".into(),
                        s.reload_failures.load(Ordering::Relaxed),
                    ),
                ]
            },
        ),
    ];
    for (name, help, rows) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (n, s) in all {
            for (extra, v) in rows(s) {
                let _ = writeln!(out, "{name}{{plugin=\"{}\"{extra}}} {v}", escape(n));
            }
        }
    }
    out.push_str("# HELP synapsor_plugin_call_seconds Duration of plugin hook calls.\n# TYPE synapsor_plugin_call_seconds histogram\n");
    for (n, s) in all {
        write_histogram(
            out,
            "synapsor_plugin_call_seconds",
            &format!("plugin=\"{}\"", escape(n)),
            &BUCKETS,
            &s.buckets,
            load(&s.count),
            load(&s.sum_nanos) as f64 / 1e9,
        );
    }
}
