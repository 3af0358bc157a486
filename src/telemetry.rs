//! The gateway's one metrics registry, rendered on the admin listener's `/metrics`.
//!
//! It is a `prometheus-client` registry (the official Rust client, which linkerd2-proxy uses):
//! each producer — the `metrics` stage, plugins, the shared rate limit's Redis store, the
//! upstream side, the forwarder's held streams, reloads — registers its own families or a
//! collector, and the library writes the OpenMetrics text exposition. This module only keeps a
//! family registered once (stages are rebuilt by every reload and by every listener that has
//! them, and must all count into the same family) and escapes label values, which
//! `prometheus-client` 0.24 writes as given (method names come from clients).

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry as Families};

/// The registry every producer of the gateway registers into; shared by listeners, workers and
/// reloads.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    families: Families,
    /// What was registered, by name: handed out again instead of registered twice.
    registered: HashMap<&'static str, Box<dyn Any + Send>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metric (usually a `Family`) named `name`, made by `make` and registered with `help`
    /// the first time; every later call gets the same one (a clone sharing its values). `name`
    /// is as exposed, without the `_total` a counter gets.
    ///
    /// # Panics
    /// When `name` was registered before as another type (a programming error).
    pub fn metric<M>(&self, name: &'static str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: Metric + Clone,
    {
        let mut inner = self.lock();
        if let Some(found) = inner.registered.get(name) {
            return found
                .downcast_ref::<M>()
                .unwrap_or_else(|| panic!("metric {name} registered twice as different types"))
                .clone();
        }
        let metric = make();
        // prometheus-client ends the help text with a period itself.
        let help = help.strip_suffix('.').unwrap_or(help);
        inner.families.register(name, help, metric.clone());
        inner.registered.insert(name, Box::new(metric.clone()));
        metric
    }

    /// The collector kept under `key`, made by `make` and registered the first time; every
    /// later call gets the same one. A collector writes its families at each scrape (for state
    /// that lives elsewhere: plugin counters, endpoint state).
    ///
    /// # Panics
    /// When `key` was registered before as another type (a programming error).
    pub fn collector<C>(&self, key: &'static str, make: impl FnOnce() -> C) -> C
    where
        C: Collector + Clone,
    {
        let mut inner = self.lock();
        if let Some(found) = inner.registered.get(key) {
            return found
                .downcast_ref::<C>()
                .unwrap_or_else(|| panic!("collector {key} registered twice as different types"))
                .clone();
        }
        let collector = make();
        inner
            .families
            .register_collector(Box::new(collector.clone()));
        inner.registered.insert(key, Box::new(collector.clone()));
        collector
    }

    /// The value kept under `key` (state producers share across stages, such as a count of
    /// label sets), made by `make` the first time; every later call gets a clone of it.
    ///
    /// # Panics
    /// When `key` was used before for another type (a programming error).
    pub fn shared<T>(&self, key: &'static str, make: impl FnOnce() -> T) -> T
    where
        T: Clone + Any + Send,
    {
        let mut inner = self.lock();
        let found = inner
            .registered
            .entry(key)
            .or_insert_with(|| Box::new(make()));
        found
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("{key} kept twice as different types"))
            .clone()
    }

    /// The OpenMetrics text exposition of everything registered, `# EOF` last.
    pub fn render(&self, out: &mut String) {
        let inner = self.lock();
        if let Err(e) = prometheus_client::encoding::text::encode(out, &inner.families) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
    }
}

/// Producers a collector reports on, by name (plugins, Redis stores): one put under a name
/// already there replaces it, so a producer rebuilt by a reload is never shown twice.
pub struct Named<T>(Arc<Mutex<Vec<Entry<T>>>>);

/// A name and what is shown under it.
pub type Entry<T> = (Arc<str>, Arc<T>);

impl<T> Clone for Named<T> {
    fn clone(&self) -> Self {
        Named(self.0.clone())
    }
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Arc::default())
    }
}

impl<T> Named<T> {
    /// Adds `value` under `name`, replacing what was there.
    pub fn put(&self, name: Arc<str>, value: Arc<T>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(n, _)| *n != name);
        all.push((name, value));
    }

    /// Everything put so far, in order.
    pub fn all(&self) -> Vec<Entry<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A label value, escaped as the Prometheus and OpenMetrics text formats require (backslash,
/// double quote and line feed). Cheap to clone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label(pub Arc<str>);

impl From<&str> for Label {
    fn from(s: &str) -> Label {
        Label(s.into())
    }
}

impl From<&Arc<str>> for Label {
    fn from(s: &Arc<str>) -> Label {
        Label(s.clone())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&escape(&self.0))
    }
}

/// `v` with backslash, double quote and line feed escaped.
pub fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// Writes one family from a collector: its descriptor (`name` as exposed, without a
/// counter's `_total`), then each sample with its labels. Nothing is written without samples.
pub fn encode_family<'a, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, Sample<'a>)>,
) -> std::fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One sample's value, for [`encode_family`].
pub enum Sample<'a> {
    /// A counter's value.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram: per-bucket (not cumulative) counts for the upper `bounds`, then the
    /// total count (observations past the last bound make up the difference) and the sum.
    Histogram {
        /// Bucket upper bounds, ascending.
        bounds: &'a [f64],
        /// Observations per bucket.
        counts: &'a [u64],
        /// All observations.
        count: u64,
        /// Their sum.
        sum: f64,
    },
}

impl Sample<'_> {
    fn encode(self, mut metric: MetricEncoder<'_>) -> std::fmt::Result {
        match self {
            Sample::Counter(v) => ConstCounter::new(v).encode(metric),
            Sample::Gauge(v) => ConstGauge::new(v).encode(metric),
            Sample::Histogram {
                bounds,
                counts,
                count,
                sum,
            } => {
                let mut buckets: Vec<(f64, u64)> =
                    bounds.iter().copied().zip(counts.iter().copied()).collect();
                let inside: u64 = counts.iter().sum();
                buckets.push((f64::MAX, count.saturating_sub(inside)));
                metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;

    type ByMethod = Family<[(&'static str, Label); 1], Counter>;

    #[test]
    fn a_family_is_registered_once_and_label_values_are_escaped() {
        let r = Registry::new();
        let a: ByMethod = r.metric("calls", "Calls.", ByMethod::default);
        let b: ByMethod = r.metric("calls", "Calls.", ByMethod::default);
        a.get_or_create(&[("method", "a\"b\\c\nd".into())]).inc();
        b.get_or_create(&[("method", "a\"b\\c\nd".into())]).inc();
        let mut out = String::new();
        r.render(&mut out);
        assert_eq!(out.matches("# TYPE calls counter").count(), 1, "{out}");
        assert!(
            out.contains("calls_total{method=\"a\\\"b\\\\c\\nd\"} 2"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
