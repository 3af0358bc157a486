//! The state of plugin-defined metrics that the module's files share: the limits, the public
//! definition types, a defined metric and its series, and the sets (their methods are in
//! `mod.rs`, `check.rs` and `exposition.rs`).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use dashmap::DashMap;

use crate::telemetry::Named;

/// What a metric's exported family name starts with, before the plugin's name for it.
pub const PREFIX: &str = "synapsor_wasm_";
/// The longest metric or label name, in characters (all ASCII).
pub const MAX_NAME: usize = 64;
/// The longest HELP text, in bytes (before escaping).
pub const MAX_HELP: usize = 256;
/// Most label names a metric has (besides `plugin`, which the gateway adds).
pub const MAX_LABELS: usize = 8;
/// Most bucket bounds a histogram has (besides `+Inf`, which is always there).
pub const MAX_BUCKETS: usize = 32;
/// Most metrics one plugin defines.
pub const MAX_METRICS: usize = 64;
/// Most series one plugin holds, over all its metrics (a series: one metric and one list of
/// label values).
pub const MAX_SERIES: usize = 1_000;
/// The longest label value an update may give, in bytes.
pub const MAX_LABEL_VALUE: usize = 128;
/// The buckets of a histogram defined with none: Prometheus' defaults, in the metric's unit
/// (meant for seconds).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The key the collector is kept under in the [`Registry`].
pub(super) const COLLECTOR: &str = "plugin_custom_metrics";
/// Shards of each metric's series map (updates to different series rarely share a lock).
pub(super) const SHARDS: usize = 16;

/// The kind of a plugin-defined metric: the OpenMetrics type it is exported as (`metric-kind`
/// in the WIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up: [`PluginMetricSet::add`] with a delta of 0 or more. Exported as an
    /// OpenMetrics counter, its samples named `<family>_total`.
    Counter,
    /// Goes up and down: [`PluginMetricSet::add`] (any sign) and [`PluginMetricSet::set`].
    Gauge,
    /// Counts observations ([`PluginMetricSet::observe`]) into buckets, with their count and
    /// sum: `_bucket{le}` (cumulative), `_count`, `_sum`.
    Histogram,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric a plugin defines (the WIT record `metric`), as the host sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricDef {
    /// 1 to [`MAX_NAME`] characters of `[a-z0-9_]`, not starting with a digit; exported as
    /// [`PREFIX`]`<name>`.
    pub name: String,
    /// The HELP text, at most [`MAX_HELP`] bytes; escaped when written. When several plugins
    /// share the family, the first in load order that defines it gives its HELP.
    pub help: String,
    /// What kind of metric it is.
    pub kind: Kind,
    /// Its label names, at most [`MAX_LABELS`], each like `name`, none twice, not `plugin` (the
    /// gateway adds it), none starting with `__` (reserved by Prometheus), and not `le` for a
    /// histogram (its bucket label). Every update gives the values in this order.
    pub labels: Vec<String>,
    /// A histogram's bucket upper bounds (`le`, inclusive): at most [`MAX_BUCKETS`], finite,
    /// strictly increasing; empty for [`DEFAULT_BUCKETS`]. Ignored for other kinds.
    pub buckets: Vec<f64>,
}

/// One defined metric and its series.
pub(super) struct Metric {
    pub(super) name: Box<str>,
    /// The HELP text, escaped.
    pub(super) help: Box<str>,
    pub(super) shape: Shape,
    /// By label values (in the order of `shape.labels`).
    pub(super) series: DashMap<Box<[String]>, Value>,
}

/// One series' value. `f64`s are kept as their bits.
pub(super) enum Value {
    /// A counter's or gauge's value.
    Scalar(AtomicU64),
    /// A histogram: observations per bucket (not cumulative; one more than the bounds, for
    /// those past the last), and their sum.
    Histogram {
        counts: Box<[AtomicU64]>,
        sum: AtomicU64,
    },
}

/// An update, as the three host functions ask.
#[derive(Clone, Copy)]
pub(super) enum Op {
    Add,
    Set,
    Observe,
}

/// Adds `v` to the `f64` in `a`; false (and `a` unchanged) when the result would not be finite.
pub(super) fn add_f64(a: &AtomicU64, v: f64) -> bool {
    a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        let new = f64::from_bits(old) + v;
        new.is_finite().then_some(new.to_bits())
    })
    .is_ok()
}

impl Value {
    pub(super) fn new(shape: &Shape) -> Value {
        match shape.kind {
            Kind::Counter | Kind::Gauge => Value::Scalar(AtomicU64::new(0f64.to_bits())),
            Kind::Histogram => Value::Histogram {
                counts: (0..=shape.buckets.len())
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                sum: AtomicU64::new(0f64.to_bits()),
            },
        }
    }

    /// Applies an update already checked against the metric's kind; false when it would make a
    /// value not finite (the update is then not applied).
    pub(super) fn apply(&self, op: Op, v: f64, bounds: &[f64]) -> bool {
        match (self, op) {
            (Value::Scalar(bits), Op::Set) => {
                bits.store(v.to_bits(), Ordering::Relaxed);
                true
            }
            (Value::Scalar(bits), _) => add_f64(bits, v),
            (Value::Histogram { counts, sum }, _) => {
                if !add_f64(sum, v) {
                    return false;
                }
                // The first bound `v` does not exceed (`le` is inclusive), else past the last.
                let i = bounds.partition_point(|b| *b < v);
                counts[i].fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }
}

/// The state every plugin's set shares: the sets shown (by plugin name, a reloaded plugin's new
/// set replacing its old one), and a lock that makes defining a name and checking it against
/// every other plugin's definitions one step.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) sets: Named<PluginMetricSet>,
    pub(super) defining: Mutex<()>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One plugin's metrics: the ones it defined (in id order) and their series, and a count of
/// the updates it asked for that were dropped. Shared by every instance of the plugin; updates
/// come from many threads at once and take no lock but a shard's read lock of the metric's
/// series map (a write lock only to add a series).
pub struct PluginMetricSet {
    pub(super) plugin: Arc<str>,
    /// The registry's shared state, weak so the shown sets and the state do not keep each
    /// other alive.
    pub(super) shared: Weak<Shared>,
    /// Filled in order by [`define`](Self::define); an id is an index.
    pub(super) metrics: [OnceLock<Metric>; MAX_METRICS],
    /// Serializes this set's definitions (the shared lock does too, while the registry lives).
    pub(super) defining: Mutex<()>,
    /// Series held, over all metrics.
    pub(super) series: AtomicUsize,
    pub(super) dropped: AtomicU64,
}

impl fmt::Debug for PluginMetricSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginMetricSet")
            .field("plugin", &self.plugin)
            .field("metrics", &self.defined().count())
            .field("series", &self.series.load(Ordering::Relaxed))
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// What must match for two definitions of a name to be the same metric: one family has one type
/// and one label set in the exposition.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Shape {
    pub(super) kind: Kind,
    pub(super) labels: Box<[String]>,
    /// The effective bounds: [`DEFAULT_BUCKETS`] for a histogram defined with none, empty for
    /// other kinds.
    pub(super) buckets: Box<[f64]>,
}
