//! Per-plugin metrics: hook calls, rejections, status overrides, failures by kind, a latency
//! histogram of hook calls, instances created and reloads. Rendered on the admin `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    let esc = crate::interceptor::metrics::escape;
    out.push_str("# HELP synapsor_plugin_calls_total Plugin hook calls.\n# TYPE synapsor_plugin_calls_total counter\n");
    for (n, s) in all {
        for (i, hook) in ["on_request", "on_response"].iter().enumerate() {
            let _ = writeln!(
                out,
                "synapsor_plugin_calls_total{{plugin=\"{}\",hook=\"{hook}\"}} {}",
                esc(n),
                s.calls[i].load(Ordering::Relaxed)
            );
        }
    }
    out.push_str("# HELP synapsor_plugin_rejections_total Calls a plugin refused.\n# TYPE synapsor_plugin_rejections_total counter\n");
    for (n, s) in all {
        let _ = writeln!(
            out,
            "synapsor_plugin_rejections_total{{plugin=\"{}\"}} {}",
            esc(n),
            s.rejections.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP synapsor_plugin_status_overrides_total Statuses a plugin replaced.\n# TYPE synapsor_plugin_status_overrides_total counter\n");
    for (n, s) in all {
        let _ = writeln!(
            out,
            "synapsor_plugin_status_overrides_total{{plugin=\"{}\"}} {}",
            esc(n),
            s.overrides.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP synapsor_plugin_errors_total Plugin failures, by kind.\n# TYPE synapsor_plugin_errors_total counter\n");
    for (n, s) in all {
        for (i, kind) in KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "synapsor_plugin_errors_total{{plugin=\"{}\",kind=\"{kind}\"}} {}",
                esc(n),
                s.errors[i].load(Ordering::Relaxed)
            );
        }
    }
    out.push_str("# HELP synapsor_plugin_reloads_total Plugin reloads, by result.\n# TYPE synapsor_plugin_reloads_total counter\n");
    for (n, s) in all {
        let _ = writeln!(
            out,
            "synapsor_plugin_reloads_total{{plugin=\"{}\",result=\"ok\"}} {}\nsynapsor_plugin_reloads_total{{plugin=\"{}\",result=\"failed\"}} {}",
            esc(n),
            s.reloads.load(Ordering::Relaxed),
            esc(n),
            s.reload_failures.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP synapsor_plugin_call_seconds Duration of plugin hook calls.\n# TYPE synapsor_plugin_call_seconds histogram\n");
    for (n, s) in all {
        let l = format!("plugin=\"{}\"", esc(n));
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += s.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "synapsor_plugin_call_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
            );
        }
        let count = s.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "synapsor_plugin_call_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
        );
        let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "synapsor_plugin_call_seconds_sum{{{l}}} {sum}");
        let _ = writeln!(out, "synapsor_plugin_call_seconds_count{{{l}}} {count}");
    }
}
