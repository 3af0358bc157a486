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
