//! Checking a plugin's metric definitions: names, labels and buckets, and collisions with the
//! metrics already defined.

use std::fmt;

use super::model::{
    Kind, MetricDef, PluginMetricSet, Shape, Shared, DEFAULT_BUCKETS, MAX_BUCKETS, MAX_HELP,
    MAX_LABELS, MAX_NAME,
};

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} with labels {:?}", self.kind.as_str(), self.labels)?;
        if self.kind == Kind::Histogram {
            write!(f, " and buckets {:?}", self.buckets)?;
        }
        Ok(())
    }
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
pub(super) fn check(def: &MetricDef) -> Result<Shape, String> {
    check_name("metric name", &def.name)?;
    let name = &def.name;
    if def.help.len() > MAX_HELP {
        return Err(format!(
            "the help of metric {name} is {} bytes, more than {MAX_HELP}",
            def.help.len()
        ));
    }
    check_labels(def)?;
    let buckets = check_buckets(def)?;
    Ok(Shape {
        kind: def.kind,
        labels: def.labels.as_slice().into(),
        buckets,
    })
}

/// Checks a definition's label names (its name is checked).
fn check_labels(def: &MetricDef) -> Result<(), String> {
    let name = &def.name;
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
    Ok(())
}

/// Checks a definition's bucket bounds (its name is checked); the effective ones when they are
/// valid.
fn check_buckets(def: &MetricDef) -> Result<Box<[f64]>, String> {
    let name = &def.name;
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
    Ok(buckets)
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

impl PluginMetricSet {
    /// The id of this set's metric `name` when it has `shape`. Called under the set's
    /// `defining` lock.
    ///
    /// # Errors
    /// When this set defined `name` with another shape, or another name whose samples would
    /// collide with `name`'s.
    pub(super) fn defined_as(&self, name: &str, shape: &Shape) -> Result<Option<u32>, String> {
        for (id, m) in self.defined().enumerate() {
            if &*m.name == name {
                return if m.shape == *shape {
                    Ok(Some(id as u32))
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
        }
        Ok(None)
    }

    /// Checks `name` with `shape` against the metrics of the other plugins shown on the
    /// registry. Called under the shared `defining` lock.
    ///
    /// # Errors
    /// When another plugin defined `name` with another shape, or another name whose samples
    /// would collide with `name`'s.
    pub(super) fn check_others(
        &self,
        shared: &Shared,
        name: &str,
        shape: &Shape,
    ) -> Result<(), String> {
        for (plugin, set) in shared.sets.all() {
            // Another version of this plugin: only one of them is shown.
            if plugin == self.plugin {
                continue;
            }
            for m in set.defined() {
                if &*m.name == name && m.shape != *shape {
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
        Ok(())
    }
}
