//! The OpenMetrics exposition of every plugin's metrics, as the module docs show it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::model::{Kind, Metric, Shared, Value, PREFIX};
use crate::telemetry::{encode_family, Label, Sample};

/// The family counting every plugin's dropped updates (exported with `_total`).
const DROPPED: &str = "synapsor_plugin_metric_updates_dropped";

/// The collector writing every plugin's metrics; registered once per
/// [`Registry`](crate::telemetry::Registry).
#[derive(Clone, Default)]
pub(super) struct PluginCustomMetrics(pub(super) Arc<Shared>);

impl fmt::Debug for PluginCustomMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginCustomMetrics")
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

/// The plugins that define one metric name, in load order, with their definitions of it.
type Members<'a> = [(&'a Arc<str>, &'a Metric)];

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
            encode_metric(&mut encoder, name, &members)?;
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

/// Writes the family of the metric `name`: the series of every plugin in `members` (at least
/// one) that defines it as the first one does, with the first one's HELP.
fn encode_metric(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    members: &Members<'_>,
) -> fmt::Result {
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
        return encode_scalars(encoder, &exported, &first.help, shape.kind, rows.collect());
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
        encoder,
        &exported,
        &first.help,
        MetricType::Histogram,
        samples,
    )
}
