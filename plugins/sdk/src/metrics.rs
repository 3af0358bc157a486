//! Metrics a plugin defines, shown on the gateway's `/metrics` as `synapsor_wasm_<name>` with
//! the label `plugin` (the plugin's name) added before the plugin's own labels.
//!
//! Define each metric in [`Plugin::init`](crate::Plugin::init): every instance does, and the
//! gateway answers the same metric each time (defining is idempotent for the same name, kind,
//! labels and buckets). An error (a bad name or label, a clash with a metric of the same name
//! but another shape, more than 64 metrics) is best returned from `init`, which stops the
//! plugin from loading with that text in the gateway's log.
//!
//! ```ignore
//! use synapsor_plugin_sdk::{Counter, Histogram};
//!
//! let calls = Counter::define("calls", "Calls seen, by method", &["method"])?;
//! let sizes = Histogram::define("sizes", "Message sizes", &["direction"], &[64.0, 1024.0])?;
//! calls.inc(&["/pkg.Svc/Get"]);            // synapsor_wasm_calls_total{plugin="…",method="…"}
//! sizes.observe(&["request"], 300.0);
//! ```
//!
//! Updates give the label values in the order the labels were defined. The gateway drops (and
//! counts in `synapsor_plugin_metric_updates_dropped_total{plugin}`) an update with the wrong
//! number of labels, a value that is not finite, a negative counter delta, a label value over
//! 128 bytes, or one that would make the plugin's series more than 1,000.

use crate::bindings::synapsor::plugin::host;
use crate::{Metric, MetricKind};

fn define(
    name: &str,
    help: &str,
    kind: MetricKind,
    labels: &[&str],
    buckets: &[f64],
) -> Result<u32, String> {
    host::define_metric(&Metric {
        name: name.to_string(),
        help: help.to_string(),
        kind,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        buckets: buckets.to_vec(),
    })
    .map_err(|e| format!("metric {name}: {e}"))
}

fn values(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|l| l.to_string()).collect()
}

/// Defines a metric from its full description and answers its id, for
/// [`metric_add`], [`metric_set`] and [`metric_observe`] (the typed wrappers below are simpler).
pub fn define_metric(metric: &Metric) -> Result<u32, String> {
    host::define_metric(metric)
}

pub use host::{metric_add, metric_observe, metric_set};

/// A counter: only goes up. Exported as `synapsor_wasm_<name>_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    id: u32,
}

impl Counter {
    /// Defines (or finds) the counter `name` (1 to 64 of `[a-z0-9_]`, not starting with a
    /// digit, without `_total`) with its HELP text and label names (at most 8, not `plugin`).
    pub fn define(name: &str, help: &str, labels: &[&str]) -> Result<Counter, String> {
        define(name, help, MetricKind::Counter, labels, &[]).map(|id| Counter { id })
    }

    /// Adds `value` (0 or more) to the series with these label values.
    pub fn add(&self, labels: &[&str], value: f64) {
        host::metric_add(self.id, &values(labels), value);
    }

    /// Adds 1 to the series with these label values.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// The gateway's id for the metric.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// A gauge: goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    id: u32,
}

impl Gauge {
    /// Defines (or finds) the gauge `name` (as for [`Counter::define`]).
    pub fn define(name: &str, help: &str, labels: &[&str]) -> Result<Gauge, String> {
        define(name, help, MetricKind::Gauge, labels, &[]).map(|id| Gauge { id })
    }

    /// Sets the series with these label values to `value`.
    pub fn set(&self, labels: &[&str], value: f64) {
        host::metric_set(self.id, &values(labels), value);
    }

    /// Adds `value` (negative to subtract) to the series with these label values.
    pub fn add(&self, labels: &[&str], value: f64) {
        host::metric_add(self.id, &values(labels), value);
    }

    /// The gateway's id for the metric.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// A histogram: counts observations into buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    id: u32,
}

impl Histogram {
    /// Defines (or finds) the histogram `name` (as for [`Counter::define`]) with its bucket
    /// bounds: increasing, at most 32; empty for Prometheus' defaults (0.005 to 10).
    pub fn define(
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<Histogram, String> {
        define(name, help, MetricKind::Histogram, labels, buckets).map(|id| Histogram { id })
    }

    /// Records `value` in the series with these label values.
    pub fn observe(&self, labels: &[&str], value: f64) {
        host::metric_observe(self.id, &values(labels), value);
    }

    /// The gateway's id for the metric.
    pub fn id(&self) -> u32 {
        self.id
    }
}
