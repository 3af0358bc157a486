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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::telemetry::{encode_family, escape, Label, Named, Registry, Sample};

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

/// The family counting every plugin's dropped updates (exported with `_total`).
const DROPPED: &str = "synapsor_plugin_metric_updates_dropped";
/// The key the collector is kept under in the [`Registry`].
const COLLECTOR: &str = "plugin_custom_metrics";
/// Shards of each metric's series map (updates to different series rarely share a lock).
const SHARDS: usize = 16;

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
    fn as_str(self) -> &'static str {
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

/// What must match for two definitions of a name to be the same metric: one family has one type
/// and one label set in the exposition.
#[derive(Clone, Debug, PartialEq)]
struct Shape {
    kind: Kind,
    labels: Box<[String]>,
    /// The effective bounds: [`DEFAULT_BUCKETS`] for a histogram defined with none, empty for
    /// other kinds.
    buckets: Box<[f64]>,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} with labels {:?}", self.kind.as_str(), self.labels)?;
        if self.kind == Kind::Histogram {
            write!(f, " and buckets {:?}", self.buckets)?;
        }
        Ok(())
    }
}

/// One defined metric and its series.
struct Metric {
    name: Box<str>,
    /// The HELP text, escaped.
    help: Box<str>,
    shape: Shape,
    /// By label values (in the order of `shape.labels`).
    series: DashMap<Box<[String]>, Value>,
}

/// One series' value. `f64`s are kept as their bits.
enum Value {
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
enum Op {
    Add,
    Set,
    Observe,
}

/// Adds `v` to the `f64` in `a`; false (and `a` unchanged) when the result would not be finite.
fn add_f64(a: &AtomicU64, v: f64) -> bool {
    a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        let new = f64::from_bits(old) + v;
        new.is_finite().then_some(new.to_bits())
    })
    .is_ok()
}

impl Value {
    fn new(shape: &Shape) -> Value {
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
    fn apply(&self, op: Op, v: f64, bounds: &[f64]) -> bool {
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
struct Shared {
    sets: Named<PluginMetricSet>,
    defining: Mutex<()>,
}

/// The collector writing every plugin's metrics; registered once per [`Registry`].
#[derive(Clone, Default)]
struct PluginCustomMetrics(Arc<Shared>);

impl fmt::Debug for PluginCustomMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginCustomMetrics")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `s` for an error message: quoted, and cut short when long.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &s[..end])
}

/// Checks a metric or label name: 1 to [`MAX_NAME`] characters of `[a-z0-9_]`, not starting
/// with a digit.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} {} is not 1 to {MAX_NAME} characters of [a-z0-9_] not starting with a digit",
            shown(name)
        ))
    }
}

/// Checks a definition; its shape when it is valid.
fn check(def: &MetricDef) -> Result<Shape, String> {
    check_name("metric name", &def.name)?;
    let name = &def.name;
    if def.help.len() > MAX_HELP {
        return Err(format!(
            "the help of metric {name} is {} bytes, more than {MAX_HELP}",
            def.help.len()
        ));
    }
    if def.labels.len() > MAX_LABELS {
        return Err(format!(
            "metric {name} has {} labels, more than {MAX_LABELS}",
            def.labels.len()
        ));
    }
    for (i, label) in def.labels.iter().enumerate() {
        check_name(&format!("label name of metric {name}"), label)?;
        let reserved = if label == "plugin" {
            Some("the gateway adds it")
        } else if label.starts_with("__") {
            Some("names starting with __ are reserved")
        } else if label == "le" && def.kind == Kind::Histogram {
            Some("a histogram's buckets use it")
        } else {
            None
        };
        if let Some(why) = reserved {
            return Err(format!(
                "metric {name} may not have the label {label}: {why}"
            ));
        }
        if def.labels[..i].contains(label) {
            return Err(format!("metric {name} has the label {label} twice"));
        }
    }
    let buckets: Box<[f64]> = match def.kind {
        Kind::Histogram if def.buckets.is_empty() => DEFAULT_BUCKETS.into(),
        Kind::Histogram => {
            let b = &def.buckets;
            if b.len() > MAX_BUCKETS {
                return Err(format!(
                    "histogram {name} has {} buckets, more than {MAX_BUCKETS}",
                    b.len()
                ));
            }
            if !b.iter().all(|v| v.is_finite()) {
                return Err(format!(
                    "histogram {name} has a bucket bound that is not finite"
                ));
            }
            if !b.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!(
                    "the bucket bounds of histogram {name} are not strictly increasing"
                ));
            }
            b.as_slice().into()
        }
        Kind::Counter | Kind::Gauge => Box::default(),
    };
    Ok(Shape {
        kind: def.kind,
        labels: def.labels.as_slice().into(),
        buckets,
    })
}

/// The names a family takes in the exposition: its own and those of its samples (OpenMetrics
/// reserves `_created` for counters and histograms too).
fn names_taken(name: &str, kind: Kind) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        Kind::Counter => &["", "_total", "_created"],
        Kind::Gauge => &[""],
        Kind::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
    };
    suffixes.iter().map(|s| format!("{name}{s}")).collect()
}

/// Whether two differently named families would write a sample name the other one uses too
/// (gauge `x_total` and counter `x`, say).
fn collide(a: &str, a_kind: Kind, b: &str, b_kind: Kind) -> bool {
    let b_names = names_taken(b, b_kind);
    names_taken(a, a_kind).iter().any(|n| b_names.contains(n))
}

/// One plugin's metrics: the ones it defined (in id order) and their series, and a count of
/// the updates it asked for that were dropped. Shared by every instance of the plugin; updates
/// come from many threads at once and take no lock but a shard's read lock of the metric's
/// series map (a write lock only to add a series).
pub struct PluginMetricSet {
    plugin: Arc<str>,
    /// The registry's shared state, weak so the shown sets and the state do not keep each
    /// other alive.
    shared: Weak<Shared>,
    /// Filled in order by [`define`](Self::define); an id is an index.
    metrics: [OnceLock<Metric>; MAX_METRICS],
    /// Serializes this set's definitions (the shared lock does too, while the registry lives).
    defining: Mutex<()>,
    /// Series held, over all metrics.
    series: AtomicUsize,
    dropped: AtomicU64,
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
        let mut count = 0;
        for (id, m) in self.defined().enumerate() {
            if &*m.name == name {
                return if m.shape == shape {
                    Ok(id as u32)
                } else {
                    Err(format!(
                        "metric {name} is already defined as {}, not {shape}",
                        m.shape
                    ))
                };
            }
            if collide(name, shape.kind, &m.name, m.shape.kind) {
                return Err(format!(
                    "metric {name} ({}) would collide in the exposition with the {} {}",
                    shape.kind.as_str(),
                    m.shape.kind.as_str(),
                    m.name
                ));
            }
            count = id + 1;
        }
        for (plugin, set) in shared.iter().flat_map(|s| s.sets.all()) {
            // Another version of this plugin: only one of them is shown.
            if plugin == self.plugin {
                continue;
            }
            for m in set.defined() {
                if &*m.name == name && m.shape != shape {
                    return Err(format!(
                        "metric {name} is already defined by plugin {plugin} as {}, not {shape}",
                        m.shape
                    ));
                }
                if &*m.name != name && collide(name, shape.kind, &m.name, m.shape.kind) {
                    return Err(format!(
                        "metric {name} ({}) would collide in the exposition with the {} {} of \
                         plugin {plugin}",
                        shape.kind.as_str(),
                        m.shape.kind.as_str(),
                        m.name
                    ));
                }
            }
        }
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

/// A series' labels as written: `plugin` first, then the metric's.
type Labels<'a> = Vec<(&'a str, Label)>;

/// A series read at a scrape.
enum Read {
    Scalar(f64),
    /// Per-bucket counts (one more than the bounds) and the sum.
    Histogram(Vec<u64>, f64),
}

/// The series of one plugin's metric, by label values, read now.
fn read<'a>(plugin: &Arc<str>, m: &'a Metric) -> Vec<(Labels<'a>, Read)> {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut rows: Vec<(Box<[String]>, Read)> = m
        .series
        .iter()
        .map(|e| {
            let read = match e.value() {
                Value::Scalar(bits) => Read::Scalar(f64::from_bits(load(bits))),
                Value::Histogram { counts, sum } => {
                    Read::Histogram(counts.iter().map(load).collect(), f64::from_bits(load(sum)))
                }
            };
            (e.key().clone(), read)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter()
        .map(|(values, read)| {
            let mut labels = Vec::with_capacity(values.len() + 1);
            labels.push(("plugin", Label::from(plugin)));
            let named = m.shape.labels.iter().zip(values.iter());
            labels.extend(named.map(|(n, v)| (n.as_str(), Label::from(v.as_str()))));
            (labels, read)
        })
        .collect()
}

/// Writes a counter or gauge family with `f64` values (as [`encode_family`] does for integers):
/// nothing without rows.
fn encode_scalars(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: Kind,
    rows: Vec<(Labels<'_>, f64)>,
) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let ty = match kind {
        Kind::Counter => MetricType::Counter,
        _ => MetricType::Gauge,
    };
    let mut family = encoder.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        let metric = family.encode_family(&labels)?;
        match kind {
            Kind::Counter => ConstCounter::new(v).encode(metric)?,
            _ => ConstGauge::new(v).encode(metric)?,
        }
    }
    Ok(())
}

impl Collector for PluginCustomMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let sets = self.0.sets.all();
        // By name: each plugin that defines it, in load order.
        let mut families: BTreeMap<&str, Vec<(&Arc<str>, &Metric)>> = BTreeMap::new();
        for (plugin, set) in &sets {
            for m in set.defined() {
                families.entry(&m.name).or_default().push((plugin, m));
            }
        }
        for (name, members) in families {
            let first = members[0].1;
            let shape = &first.shape;
            let exported = format!("{PREFIX}{name}");
            // Definitions are checked against each other; this only guards the exposition.
            let rows = members
                .iter()
                .filter(|(_, m)| m.shape == *shape)
                .flat_map(|(plugin, m)| read(plugin, m));
            if shape.kind != Kind::Histogram {
                let rows = rows.filter_map(|(labels, read)| match read {
                    Read::Scalar(v) => Some((labels, v)),
                    Read::Histogram(..) => None,
                });
                encode_scalars(
                    &mut encoder,
                    &exported,
                    &first.help,
                    shape.kind,
                    rows.collect(),
                )?;
                continue;
            }
            let (labels, reads): (Vec<Labels>, Vec<(Vec<u64>, f64)>) = rows
                .filter_map(|(labels, read)| match read {
                    Read::Histogram(counts, sum) => Some((labels, (counts, sum))),
                    Read::Scalar(_) => None,
                })
                .unzip();
            let bounds = &shape.buckets;
            let samples = labels
                .into_iter()
                .zip(&reads)
                .map(|(labels, (counts, sum))| {
                    let value = Sample::Histogram {
                        bounds,
                        counts: &counts[..bounds.len()],
                        count: counts.iter().sum(),
                        sum: *sum,
                    };
                    (labels, value)
                });
            encode_family(
                &mut encoder,
                &exported,
                &first.help,
                MetricType::Histogram,
                samples,
            )?;
        }
        let dropped = sets.iter().map(|(plugin, set)| {
            let value = Sample::Counter(set.dropped());
            ([("plugin", Label::from(plugin))], value)
        });
        encode_family(
            &mut encoder,
            DROPPED,
            "Plugin metric updates dropped: unknown id, wrong kind or number of label values, \
             a label value too long, a value not finite, a negative counter delta, or a new \
             series past the plugin's bound.",
            MetricType::Counter,
            dropped,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, kind: Kind, labels: &[&str], buckets: &[f64]) -> MetricDef {
        MetricDef {
            name: name.into(),
            help: format!("Help of {name}."),
            kind,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            buckets: buckets.into(),
        }
    }

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn render(r: &Registry) -> String {
        let mut out = String::new();
        r.render(&mut out);
        out
    }

    /// Every line of `want` is a line of `out`.
    #[track_caller]
    fn has_lines(out: &str, want: &[&str]) {
        let lines: Vec<&str> = out.lines().collect();
        for w in want {
            assert!(lines.contains(w), "no line {w:?} in\n{out}");
        }
    }

    #[test]
    fn define_is_idempotent_and_a_name_keeps_its_shape() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p".into());
        let calls = def("calls", Kind::Counter, &["method"], &[]);
        assert_eq!(p.define(calls.clone()), Ok(0));
        assert_eq!(p.define(def("depth", Kind::Gauge, &[], &[])), Ok(1));
        // Every instance defines again: same id, the HELP text may differ.
        let mut again = calls.clone();
        again.help = "Other help.".into();
        assert_eq!(p.define(again), Ok(0));
        // Buckets are ignored for other kinds than histograms.
        assert_eq!(
            p.define(def("calls", Kind::Counter, &["method"], &[1.0])),
            Ok(0)
        );
        for other in [
            def("calls", Kind::Gauge, &["method"], &[]),
            def("calls", Kind::Counter, &["path"], &[]),
            def("calls", Kind::Counter, &["method", "code"], &[]),
            def("calls", Kind::Counter, &[], &[]),
        ] {
            let e = p.define(other).unwrap_err();
            assert!(e.contains("already defined as a counter"), "{e}");
        }
        // A histogram without buckets has the defaults: the same as giving them.
        let h = def("lat", Kind::Histogram, &[], &[]);
        assert_eq!(p.define(h), Ok(2));
        assert_eq!(
            p.define(def("lat", Kind::Histogram, &[], &DEFAULT_BUCKETS)),
            Ok(2)
        );
        assert!(p.define(def("lat", Kind::Histogram, &[], &[1.0])).is_err());
        let out = render(&r);
        has_lines(
            &out,
            &[
                "# HELP synapsor_wasm_depth Help of depth.",
                "# TYPE synapsor_wasm_depth gauge",
                "synapsor_wasm_depth{plugin=\"p\"} 0.0",
                "# TYPE synapsor_wasm_lat histogram",
            ],
        );
        // `calls` has labels: no series until an update.
        assert!(!out.contains("synapsor_wasm_calls"), "{out}");
    }

    #[test]
    fn bad_names_labels_help_and_buckets_are_refused() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p".into());
        let long = "a".repeat(MAX_NAME + 1);
        for name in ["", "9lives", "Calls", "a-b", "a.b", "ä", long.as_str()] {
            let e = p.define(def(name, Kind::Counter, &[], &[])).unwrap_err();
            assert!(e.starts_with("metric name"), "{name}: {e}");
        }
        let longest = "a".repeat(MAX_NAME);
        assert_eq!(p.define(def(&longest, Kind::Gauge, &[], &[])), Ok(0));
        assert_eq!(p.define(def("_x9", Kind::Gauge, &[], &[])), Ok(1));

        let mut help = def("h", Kind::Gauge, &[], &[]);
        help.help = "x".repeat(MAX_HELP + 1);
        assert!(p.define(help.clone()).unwrap_err().contains("help"));
        help.help.pop();
        assert_eq!(p.define(help), Ok(2));

        let nine = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        let bad_labels: [&[&str]; 7] = [
            &nine,
            &["plugin"],
            &["code", "code"],
            &["9x"],
            &["Method"],
            &["__name__"],
            &[""],
        ];
        for labels in bad_labels {
            assert!(
                p.define(def("l", Kind::Counter, labels, &[])).is_err(),
                "{labels:?}"
            );
        }
        assert!(p.define(def("l", Kind::Histogram, &["le"], &[])).is_err());
        assert_eq!(p.define(def("l", Kind::Gauge, &["le"], &[])), Ok(3));
        assert_eq!(p.define(def("l8", Kind::Counter, &nine[..8], &[])), Ok(4));

        let too_many: Vec<f64> = (0..=MAX_BUCKETS).map(|i| i as f64).collect();
        let bad_buckets: [&[f64]; 6] = [
            &too_many,
            &[1.0, f64::NAN],
            &[1.0, f64::INFINITY],
            &[f64::NEG_INFINITY, 1.0],
            &[1.0, 1.0],
            &[2.0, 1.0],
        ];
        for buckets in bad_buckets {
            assert!(
                p.define(def("b", Kind::Histogram, &[], buckets)).is_err(),
                "{buckets:?}"
            );
        }
        assert_eq!(
            p.define(def("b", Kind::Histogram, &[], &too_many[..MAX_BUCKETS])),
            Ok(5)
        );
        // Ignored, so not checked, for other kinds.
        assert_eq!(p.define(def("c", Kind::Counter, &[], &[2.0, 1.0])), Ok(6));
        assert_eq!(p.dropped(), 0);
    }

    #[test]
    fn values_are_rendered_with_escaped_labels() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p\"1".into());
        let mut calls = def("calls", Kind::Counter, &["method", "code"], &[]);
        calls.help = "Calls \"by\" method\\code\nsecond line".into();
        let calls = p.define(calls).unwrap();
        let depth = p
            .define(def("depth", Kind::Gauge, &["queue"], &[]))
            .unwrap();
        let lat = p
            .define(def("lat", Kind::Histogram, &["op"], &[0.5, 1.0]))
            .unwrap();
        let odd = values(&["a\"b\\c\nd", "0"]);
        p.add(calls, &odd, 1.5);
        p.add(calls, &odd, 2.0);
        p.add(calls, &values(&["b", "0"]), 0.0);
        p.add(depth, &values(&["q"]), 5.0);
        p.add(depth, &values(&["q"]), -7.25);
        p.set(depth, &values(&["r"]), 3.0);
        p.set(depth, &values(&["r"]), -1.0);
        for v in [0.25, 0.5, 0.75, 1.0, 4.0] {
            p.observe(lat, &values(&["get"]), v);
        }
        let out = render(&r);
        has_lines(
            &out,
            &[
                "# HELP synapsor_wasm_calls Calls \\\"by\\\" method\\\\code\\nsecond line",
                "# TYPE synapsor_wasm_calls counter",
                "synapsor_wasm_calls_total{plugin=\"p\\\"1\",method=\"a\\\"b\\\\c\\nd\",code=\"0\"} 3.5",
                "synapsor_wasm_calls_total{plugin=\"p\\\"1\",method=\"b\",code=\"0\"} 0.0",
                "# TYPE synapsor_wasm_depth gauge",
                "synapsor_wasm_depth{plugin=\"p\\\"1\",queue=\"q\"} -2.25",
                "synapsor_wasm_depth{plugin=\"p\\\"1\",queue=\"r\"} -1.0",
                "# TYPE synapsor_wasm_lat histogram",
                "synapsor_wasm_lat_sum{plugin=\"p\\\"1\",op=\"get\"} 6.5",
                "synapsor_wasm_lat_count{plugin=\"p\\\"1\",op=\"get\"} 5",
                "synapsor_wasm_lat_bucket{le=\"0.5\",plugin=\"p\\\"1\",op=\"get\"} 2",
                "synapsor_wasm_lat_bucket{le=\"1.0\",plugin=\"p\\\"1\",op=\"get\"} 4",
                "synapsor_wasm_lat_bucket{le=\"+Inf\",plugin=\"p\\\"1\",op=\"get\"} 5",
                "# TYPE synapsor_plugin_metric_updates_dropped counter",
                "synapsor_plugin_metric_updates_dropped_total{plugin=\"p\\\"1\"} 0",
            ],
        );
        // Families in name order, each once; the exposition still ends with `# EOF`.
        let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s} in {out}"));
        assert!(at("# TYPE synapsor_wasm_calls") < at("# TYPE synapsor_wasm_depth"));
        assert!(at("# TYPE synapsor_wasm_depth") < at("# TYPE synapsor_wasm_lat"));
        assert_eq!(out.matches("# TYPE synapsor_wasm_calls ").count(), 1);
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert_eq!(p.dropped(), 0);
    }

    #[test]
    fn each_kind_of_bad_update_is_dropped_and_counted() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p".into());
        let c = p.define(def("c", Kind::Counter, &["k"], &[])).unwrap();
        let g = p.define(def("g", Kind::Gauge, &["k"], &[])).unwrap();
        let h = p.define(def("h", Kind::Histogram, &["k"], &[1.0])).unwrap();
        let k = values(&["v"]);
        let mut want = 0;
        let mut dropped = |what: &str, update: &dyn Fn()| {
            update();
            want += 1;
            assert_eq!(p.dropped(), want, "{what}");
        };
        dropped("unknown id", &|| p.add(3, &k, 1.0));
        dropped("id past the bound", &|| p.add(u32::MAX, &k, 1.0));
        dropped("set on a counter", &|| p.set(c, &k, 1.0));
        dropped("observe on a counter", &|| p.observe(c, &k, 1.0));
        dropped("observe on a gauge", &|| p.observe(g, &k, 1.0));
        dropped("add to a histogram", &|| p.add(h, &k, 1.0));
        dropped("set on a histogram", &|| p.set(h, &k, 1.0));
        dropped("too few labels", &|| p.add(c, &[], 1.0));
        dropped("too many labels", &|| p.add(c, &values(&["a", "b"]), 1.0));
        let long = vec!["x".repeat(MAX_LABEL_VALUE + 1)];
        dropped("long label value", &|| p.add(g, &long, 1.0));
        dropped("NaN", &|| p.set(g, &k, f64::NAN));
        dropped("infinity", &|| p.observe(h, &k, f64::INFINITY));
        dropped("-infinity", &|| p.add(g, &k, f64::NEG_INFINITY));
        dropped("negative counter delta", &|| p.add(c, &k, -1.0));
        // A value that would stop being finite is not applied.
        p.set(g, &k, f64::MAX);
        dropped("overflow", &|| p.add(g, &k, f64::MAX));
        // Nothing above made a series but the gauge's; the longest label value is fine.
        let longest = vec!["x".repeat(MAX_LABEL_VALUE)];
        p.add(g, &longest, -1.0);
        p.add(c, &k, 0.0);
        assert_eq!(p.dropped(), want);
        let out = render(&r);
        has_lines(
            &out,
            &[
                "synapsor_wasm_c_total{plugin=\"p\",k=\"v\"} 0.0",
                "synapsor_wasm_g{plugin=\"p\",k=\"v\"} 1.7976931348623157e308",
                &format!("synapsor_plugin_metric_updates_dropped_total{{plugin=\"p\"}} {want}"),
            ],
        );
        assert!(!out.contains("synapsor_wasm_h"), "{out}");
    }

    #[test]
    fn a_plugin_holds_at_most_max_series_and_they_keep_updating() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p".into());
        let other = PluginMetricSet::new(&r, "other".into());
        let c = p.define(def("c", Kind::Counter, &["n"], &[])).unwrap();
        let g = p.define(def("g", Kind::Gauge, &["n"], &[])).unwrap();
        // A label-less metric takes its one series at definition.
        let one = p.define(def("one", Kind::Counter, &[], &[])).unwrap();
        for i in 0..MAX_SERIES - 1 {
            p.add(c, &[i.to_string()], 1.0);
        }
        assert_eq!(p.dropped(), 0);
        // Full: new series of any metric are dropped...
        p.add(c, &values(&["new"]), 1.0);
        p.set(g, &values(&["0"]), 1.0);
        assert_eq!(p.dropped(), 2);
        // ...and a label-less metric defined now has no series until one is free.
        let late = p.define(def("late", Kind::Gauge, &[], &[])).unwrap();
        p.set(late, &[], 1.0);
        assert_eq!(p.dropped(), 3);
        // Existing series still update.
        p.add(c, &values(&["7"]), 2.0);
        p.add(one, &[], 4.0);
        assert_eq!(p.dropped(), 3);
        // The bound is per plugin.
        let o = other.define(def("c", Kind::Counter, &["n"], &[])).unwrap();
        other.add(o, &values(&["new"]), 1.0);
        assert_eq!(other.dropped(), 0);
        let out = render(&r);
        has_lines(
            &out,
            &[
                "synapsor_wasm_c_total{plugin=\"p\",n=\"7\"} 3.0",
                "synapsor_wasm_c_total{plugin=\"other\",n=\"new\"} 1.0",
                "synapsor_wasm_one_total{plugin=\"p\"} 4.0",
                "synapsor_plugin_metric_updates_dropped_total{plugin=\"p\"} 3",
            ],
        );
        let rows = out
            .lines()
            .filter(|l| l.starts_with("synapsor_wasm_c_total{plugin=\"p\""));
        assert_eq!(rows.count(), MAX_SERIES - 1);
        assert!(!out.contains("synapsor_wasm_c_total{plugin=\"p\",n=\"new\"}"));
        assert!(!out.contains("synapsor_wasm_g{"), "{out}");
        assert!(!out.contains("synapsor_wasm_late{"), "{out}");
    }

    #[test]
    fn a_plugin_defines_at_most_max_metrics() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p".into());
        for i in 0..MAX_METRICS {
            assert_eq!(
                p.define(def(&format!("m{i}"), Kind::Gauge, &[], &[])),
                Ok(i as u32)
            );
        }
        let e = p
            .define(def("one_more", Kind::Gauge, &[], &[]))
            .unwrap_err();
        assert!(e.contains("64 metrics"), "{e}");
        // Defining one again still answers its id.
        assert_eq!(p.define(def("m63", Kind::Gauge, &[], &[])), Ok(63));
        p.set(63, &[], 2.0);
        p.set(64, &[], 2.0);
        assert_eq!(p.dropped(), 1);
        has_lines(&render(&r), &["synapsor_wasm_m63{plugin=\"p\"} 2.0"]);
    }

    #[test]
    fn plugins_share_a_family_of_the_same_shape_and_only_that() {
        let r = Registry::new();
        let a = PluginMetricSet::new(&r, "a".into());
        let b = PluginMetricSet::new(&r, "b".into());
        let calls = def("calls", Kind::Counter, &["method"], &[]);
        let ca = a.define(calls.clone()).unwrap();
        let mut from_b = calls.clone();
        from_b.help = "B's help.".into();
        let cb = b.define(def("other", Kind::Gauge, &[], &[])).unwrap();
        assert_eq!(cb, 0);
        let cb = b.define(from_b).unwrap();
        assert_eq!((ca, cb), (0, 1));
        a.add(ca, &values(&["m"]), 1.0);
        b.add(cb, &values(&["m"]), 2.0);
        // Another shape under a name another plugin defined.
        for other in [
            def("calls", Kind::Gauge, &["method"], &[]),
            def("calls", Kind::Counter, &["method", "code"], &[]),
        ] {
            let c = PluginMetricSet::new(&r, "c".into());
            let e = c.define(other).unwrap_err();
            assert!(e.contains("already defined by plugin a"), "{e}");
        }
        // Names whose samples would collide with another family's.
        let c = PluginMetricSet::new(&r, "c".into());
        for (name, kind) in [("calls_total", Kind::Gauge), ("calls_created", Kind::Gauge)] {
            let e = c.define(def(name, kind, &[], &[])).unwrap_err();
            assert!(e.contains("collide"), "{e}");
        }
        a.define(def("lat", Kind::Histogram, &[], &[])).unwrap();
        for name in ["lat_count", "lat_sum", "lat_bucket"] {
            assert!(c.define(def(name, Kind::Counter, &[], &[])).is_err());
        }
        assert!(a.define(def("lat_sum", Kind::Gauge, &[], &[])).is_err());
        // A counter's family `x` and a gauge `x_count` do not collide.
        assert!(c.define(def("calls_count", Kind::Gauge, &[], &[])).is_ok());

        let out = render(&r);
        has_lines(
            &out,
            &[
                "# HELP synapsor_wasm_calls Help of calls.",
                "synapsor_wasm_calls_total{plugin=\"a\",method=\"m\"} 1.0",
                "synapsor_wasm_calls_total{plugin=\"b\",method=\"m\"} 2.0",
                "synapsor_plugin_metric_updates_dropped_total{plugin=\"a\"} 0",
                "synapsor_plugin_metric_updates_dropped_total{plugin=\"b\"} 0",
                "synapsor_plugin_metric_updates_dropped_total{plugin=\"c\"} 0",
            ],
        );
        assert_eq!(out.matches("# TYPE synapsor_wasm_calls counter").count(), 1);
        assert_eq!(out.matches("# HELP synapsor_wasm_calls ").count(), 1);
        assert_eq!(
            out.matches("# TYPE synapsor_plugin_metric_updates_dropped counter")
                .count(),
            1
        );
    }

    #[test]
    fn a_reloaded_plugin_s_new_set_replaces_the_old_one() {
        let r = Registry::new();
        let old = PluginMetricSet::new(&r, "p".into());
        let b = PluginMetricSet::new(&r, "b".into());
        let id = old.define(def("x", Kind::Counter, &[], &[])).unwrap();
        old.add(id, &[], 5.0);
        // While p's counter is shown, b cannot make `x` a gauge.
        assert!(b.define(def("x", Kind::Gauge, &[], &[])).is_err());
        let new = PluginMetricSet::new(&r, "p".into());
        let out = render(&r);
        assert!(!out.contains("synapsor_wasm_x"), "{out}");
        assert_eq!(
            out.matches("synapsor_plugin_metric_updates_dropped_total{plugin=\"p\"}")
                .count(),
            1,
            "{out}"
        );
        // The new version may change the shape: the old one is no longer shown.
        let id = new.define(def("x", Kind::Gauge, &["k"], &[])).unwrap();
        new.set(id, &values(&["v"]), 1.0);
        // An old version's instance still works on its own set, not shown.
        assert_eq!(old.define(def("x", Kind::Counter, &[], &[])), Ok(0));
        old.add(0, &[], 1.0);
        let out = render(&r);
        has_lines(&out, &["synapsor_wasm_x{plugin=\"p\",k=\"v\"} 1.0"]);
        assert!(!out.contains("synapsor_wasm_x_total"), "{out}");
    }

    #[test]
    fn updates_from_many_threads_all_count() {
        let r = Registry::new();
        let p = PluginMetricSet::new(&r, "p".into());
        let c = p.define(def("c", Kind::Counter, &["t"], &[])).unwrap();
        let h = p.define(def("h", Kind::Histogram, &[], &[1.0])).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..10_000 {
                        p.add(c, &[(i % 3).to_string()], 1.0);
                        p.add(c, &[format!("own{t}")], 0.5);
                        p.observe(h, &[], 1.0);
                    }
                });
            }
        });
        let out = render(&r);
        has_lines(
            &out,
            &[
                "synapsor_wasm_c_total{plugin=\"p\",t=\"0\"} 13336.0",
                "synapsor_wasm_c_total{plugin=\"p\",t=\"2\"} 13332.0",
                "synapsor_wasm_c_total{plugin=\"p\",t=\"own3\"} 5000.0",
                "synapsor_wasm_h_count{plugin=\"p\"} 40000",
                "synapsor_wasm_h_sum{plugin=\"p\"} 40000.0",
                "synapsor_wasm_h_bucket{le=\"1.0\",plugin=\"p\"} 40000",
            ],
        );
        assert_eq!(p.dropped(), 0);
    }
}
