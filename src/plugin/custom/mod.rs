//! Plugin-defined metrics: the counters, gauges and histograms a plugin defines with
//! `define-metric` and updates with `metric-add`, `metric-set` and `metric-observe` (the `host`
//! interface of `wit/plugin.wit`, 0.2.0), shown on the admin `/metrics`.
//!
//! Each plugin has one [`PluginMetricSet`]. A metric `<name>` is exported as the family
//! `synapsor_wasm_<name>`, its series labelled `plugin="<plugin name>"` first, then the labels
//! the plugin defined, in their order. The OpenMetrics text exposition (counters get `_total`,
//! histograms `_sum`, `_count` and cumulative `_bucket{le}` with `le="+Inf"` last):
//!
//! ```text
//! # HELP synapsor_wasm_cache_lookups Cache lookups, by result.
//! # TYPE synapsor_wasm_cache_lookups counter
//! synapsor_wasm_cache_lookups_total{plugin="auth",result="hit"} 12.0
//! synapsor_wasm_cache_lookups_total{plugin="quota",result="hit"} 3.0
//! # HELP synapsor_wasm_queue_depth Items waiting.
//! # TYPE synapsor_wasm_queue_depth gauge
//! synapsor_wasm_queue_depth{plugin="auth"} 4.0
//! # HELP synapsor_wasm_lookup_seconds Lookup time.
//! # TYPE synapsor_wasm_lookup_seconds histogram
//! synapsor_wasm_lookup_seconds_sum{plugin="auth"} 0.75
//! synapsor_wasm_lookup_seconds_count{plugin="auth"} 2
//! synapsor_wasm_lookup_seconds_bucket{le="0.5",plugin="auth"} 1
//! synapsor_wasm_lookup_seconds_bucket{le="1.0",plugin="auth"} 2
//! synapsor_wasm_lookup_seconds_bucket{le="+Inf",plugin="auth"} 2
//! # HELP synapsor_plugin_metric_updates_dropped Plugin metric updates dropped ...
//! # TYPE synapsor_plugin_metric_updates_dropped counter
//! synapsor_plugin_metric_updates_dropped_total{plugin="auth"} 0
//! synapsor_plugin_metric_updates_dropped_total{plugin="quota"} 1
//! ```
//!
//! Families come in name order, each once, with the rows of every plugin that has series in it
//! (plugins in load order, series by label values). Values are `f64`s. Every map is bounded
//! (see the constants); label values and HELP text from plugins are escaped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::telemetry::{escape, Registry};

mod check;
mod exposition;
mod model;
#[cfg(test)]
mod tests;

use check::check;
use exposition::PluginCustomMetrics;
use model::{lock, Metric, Op, Value, COLLECTOR, SHARDS};
pub use model::{
    Kind, MetricDef, PluginMetricSet, DEFAULT_BUCKETS, MAX_BUCKETS, MAX_HELP, MAX_LABELS,
    MAX_LABEL_VALUE, MAX_METRICS, MAX_NAME, MAX_SERIES, PREFIX,
};

impl PluginMetricSet {
    /// An empty set for plugin `plugin`, shown on `registry`'s exposition from now on in place
    /// of any set made before under the same plugin name (a reloaded plugin's new set replaces
    /// its old one, whose values are no longer shown, as [`super::PluginMetrics::add`] does).
    /// The first set made for a registry registers the collector that writes all of them.
    pub fn new(registry: &Registry, plugin: Arc<str>) -> Arc<PluginMetricSet> {
        let all = registry.collector(COLLECTOR, PluginCustomMetrics::default);
        let set = Arc::new(PluginMetricSet {
            plugin: plugin.clone(),
            shared: Arc::downgrade(&all.0),
            metrics: std::array::from_fn(|_| OnceLock::new()),
            defining: Mutex::new(()),
            series: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        all.0.sets.put(plugin, set.clone());
        set
    }

    /// The defined metrics, in id order.
    fn defined(&self) -> impl Iterator<Item = &Metric> {
        self.metrics.iter().map_while(OnceLock::get)
    }

    /// Defines a metric (`define-metric` in the WIT) and returns its id (0, 1, … in order of
    /// definition), or the id it already has when this plugin defined the same name with the
    /// same kind, labels and buckets before (every instance defines its metrics in `init`; the
    /// HELP text stays the first one). A metric without labels has its one series, at 0, from
    /// its definition (when the plugin still has room for a series).
    ///
    /// # Errors
    /// A message for the plugin when `def` breaks a rule of [`MetricDef`]; when this plugin, or
    /// another plugin shown on the same registry, defined the name with another kind, labels or
    /// buckets (two plugins defining it alike share the family, each with its own `plugin`
    /// label); when the name's exported samples would collide with another family's (gauge
    /// `x_total` and counter `x`, or gauge `h_count` and histogram `h`); or when the plugin
    /// already has [`MAX_METRICS`] metrics.
    pub fn define(&self, def: MetricDef) -> Result<u32, String> {
        let shape = check(&def)?;
        let name = def.name.as_str();
        let shared = self.shared.upgrade();
        let _all = shared.as_ref().map(|s| lock(&s.defining));
        let _own = lock(&self.defining);
        if let Some(id) = self.defined_as(name, &shape)? {
            return Ok(id);
        }
        if let Some(shared) = &shared {
            self.check_others(shared, name, &shape)?;
        }
        let count = self.defined().count();
        if count >= MAX_METRICS {
            return Err(format!(
                "cannot define metric {name}: the plugin already has {MAX_METRICS} metrics"
            ));
        }
        let metric = Metric {
            name: name.into(),
            help: escape(&def.help).into(),
            shape,
            series: DashMap::with_shard_amount(SHARDS),
        };
        if metric.shape.labels.is_empty() && self.reserve() {
            metric
                .series
                .insert(Box::default(), Value::new(&metric.shape));
        }
        // Cannot be taken: slots fill in order under `defining`.
        let _ = self.metrics[count].set(metric);
        Ok(count as u32)
    }

    /// Adds `v` to a counter's (`v` of 0 or more) or a gauge's series with these label values
    /// (`metric-add`), creating the series at 0 first when it is new. Dropped and counted in
    /// [`dropped`](Self::dropped) as [`set`](Self::set) says, and also for a negative delta to
    /// a counter.
    pub fn add(&self, id: u32, labels: &[String], v: f64) {
        self.update(id, labels, Op::Add, v);
    }

    /// Sets a gauge's series with these label values to `v` (`metric-set`). Dropped and counted
    /// in [`dropped`](Self::dropped) when `id` is unknown or not a gauge's (not of the kind the
    /// update is for); when `labels` is not one value per label name or a value is longer than
    /// [`MAX_LABEL_VALUE`] bytes; when `v`, or the value it makes, is not finite; or when the
    /// series is new and the plugin already holds [`MAX_SERIES`] series.
    pub fn set(&self, id: u32, labels: &[String], v: f64) {
        self.update(id, labels, Op::Set, v);
    }

    /// Records the observation `v` in a histogram's series with these label values
    /// (`metric-observe`): counted in the first bucket whose bound is `v` or more, added to the
    /// sum. Dropped and counted in [`dropped`](Self::dropped) as [`set`](Self::set) says.
    pub fn observe(&self, id: u32, labels: &[String], v: f64) {
        self.update(id, labels, Op::Observe, v);
    }

    /// How many updates were dropped, as shown in
    /// `synapsor_plugin_metric_updates_dropped_total{plugin}`.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn update(&self, id: u32, labels: &[String], op: Op, v: f64) {
        if !self.apply(id, labels, op, v) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies an update; false when it is dropped.
    fn apply(&self, id: u32, labels: &[String], op: Op, v: f64) -> bool {
        let Some(m) = self.metrics.get(id as usize).and_then(OnceLock::get) else {
            return false;
        };
        let fits = match (op, m.shape.kind) {
            (Op::Add, Kind::Counter) => v >= 0.0,
            (Op::Add | Op::Set, Kind::Gauge) | (Op::Observe, Kind::Histogram) => true,
            _ => false,
        };
        if !fits
            || !v.is_finite()
            || labels.len() != m.shape.labels.len()
            || labels.iter().any(|l| l.len() > MAX_LABEL_VALUE)
        {
            return false;
        }
        let bounds = &m.shape.buckets;
        if let Some(value) = m.series.get(labels) {
            return value.apply(op, v, bounds);
        }
        match m.series.entry(labels.into()) {
            MapEntry::Occupied(e) => e.get().apply(op, v, bounds),
            MapEntry::Vacant(e) => {
                if !self.reserve() {
                    return false;
                }
                let value = Value::new(&m.shape);
                let applied = value.apply(op, v, bounds);
                e.insert(value);
                applied
            }
        }
    }

    /// Takes one of the plugin's [`MAX_SERIES`]; false when none is left.
    fn reserve(&self) -> bool {
        self.series
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_SERIES).then_some(n + 1)
            })
            .is_ok()
    }
}
