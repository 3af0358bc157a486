//! The same plugins written in Rust, Python (`plugins/python/`, componentize-py) and
//! JavaScript (`plugins/js/`, componentize-js) behave the same: each behaviour below runs
//! against every language's build of the example (`NAME`, `NAME_py`, `NAME_js`). And an
//! interpreted plugin that loops, allocates without bound, throws or recurses is contained
//! like a Rust one: only its call ends, with the configured outcome, while others flow.

use std::time::{Duration, Instant};

use crate::callout_examples::ext_authz_behaves;
use crate::plugin_safety::rss_kib;
use crate::support;

use support::{gateway, metadata_values, plugin, wasm_stage, while_flowing};
use synapsor_testkit::{Backend, EchoRequest};
use tonic::{Code, Request};

/// A module `$behaviour` with one test per language: `super::$behaviour(file)` run on the
/// build `$file` + each suffix (`""` Rust, `"_py"` Python, `"_js"` JavaScript).
macro_rules! per_language {
    ($behaviour:ident, $file:literal, [$($lang:ident => $suffix:literal),*]) => {
        mod $behaviour {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $lang() {
                    super::$behaviour(concat!($file, $suffix)).await
                }
            )*
        }
    };
}

/// Tests of a behaviour in Rust, Python and JavaScript.
macro_rules! in_every_language {
    ($behaviour:ident, $file:literal) => {
        per_language!($behaviour, $file, [rust => "", python => "_py", js => "_js"]);
    };
}

/// Tests of a behaviour in Python and JavaScript (the Rust plugin's own are in
/// `plugin_safety`).
macro_rules! in_every_interpreter {
    ($behaviour:ident, $file:literal) => {
        per_language!($behaviour, $file, [python => "_py", js => "_js"]);
    };
}

in_every_language!(header_rewrite, "header_rewrite");
in_every_language!(tenant_quota, "tenant_quota");
in_every_language!(ext_authz, "ext_authz");

fn with(md: &[(&'static str, &str)]) -> Request<EchoRequest> {
    let mut r = Request::new(EchoRequest::default());
    for (k, v) in md {
        r.metadata_mut().append(*k, v.parse().unwrap());
    }
    r
}

async fn header_rewrite(file: &str) {
    let b = Backend::start("b").await;
    let stage = wasm_stage(
        "rewrite",
        file,
        ", config: { set: { x-env: prod, x-zone: a }, append: { x-via: synapsor }, remove: [x-debug], trailers: { x-served-by: synapsor } }",
    );
    let gw = gateway(&support::staged_config(&b.addr.to_string(), &stage)).await;
    let mut c = gw.client().await;
    let md = [("x-debug", "1"), ("x-via", "client"), ("x-env", "dev")];
    let resp = c.unary(with(&md)).await.expect("forwarded");
    assert_eq!(
        metadata_values(&b, "x-env"),
        ["prod"],
        "{file}: set replaces"
    );
    assert_eq!(metadata_values(&b, "x-zone"), ["a"], "{file}: set adds");
    assert_eq!(
        metadata_values(&b, "x-via"),
        ["client", "synapsor"],
        "{file}"
    );
    assert!(metadata_values(&b, "x-debug").is_empty(), "{file}: removed");
    assert_eq!(resp.metadata().get("x-served-by").unwrap(), "synapsor");
}

async fn tenant_quota(file: &str) {
    let b = Backend::start("b").await;
    let stage = wasm_stage("quota", file, ", config: { quota: 2, quotas: { big: 5 } }");
    let gw = gateway(&support::staged_config(&b.addr.to_string(), &stage)).await;
    let mut c = gw.client().await;
    let st = c.unary(with(&[])).await.unwrap_err();
    assert_eq!(
        (st.code(), st.message()),
        (Code::InvalidArgument, "missing x-tenant")
    );
    for _ in 0..2 {
        c.unary(with(&[("x-tenant", "a")]))
            .await
            .expect("within a's quota");
    }
    let st = c.unary(with(&[("x-tenant", "a")])).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{file}");
    assert_eq!(st.message(), "tenant a used its quota of 2 calls");
    assert_eq!(st.metadata().get("x-quota-limit").unwrap(), "2");
    // Counters are shared by every instance: another connection (likely another worker)
    // counts into the same quota.
    let mut c2 = gw.client().await;
    for _ in 0..5 {
        c2.unary(with(&[("x-tenant", "big")]))
            .await
            .expect("big's quota is 5");
    }
    let st = c2.unary(with(&[("x-tenant", "big")])).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{file}");
    assert_eq!(
        b.observed.calls(),
        7,
        "{file}: no refused call reached the upstream"
    );
}

async fn ext_authz(file: &str) {
    ext_authz_behaves(file).await
}

/// Why a gateway with this config does not start (plugins load at start).
async fn start_error(config: synapsor::config::Config) -> String {
    let gw = synapsor::Gateway::bind(config).await.expect("bind");
    match gw.start() {
        Ok(_) => panic!("started"),
        Err(e) => format!("{e:#}"),
    }
}

/// A plugin's `init` rejects an unknown config key, or a value of the wrong kind, in every
/// interpreted language, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_key_unknown_or_of_the_wrong_kind_stops_the_plugin_loading() {
    for lang in ["py", "js"] {
        for (file, config, expected) in [
            (
                "header_rewrite",
                "{ sett: { x-env: prod } }",
                "unknown config key `sett`",
            ),
            (
                "tenant_quota",
                "{ quota: \"7\" }",
                "config key `quota` must be a number, not a string",
            ),
        ] {
            let file = format!("{file}_{lang}");
            let stage = wasm_stage("p", &file, &format!(", config: {config}"));
            let cfg = support::staged_config("127.0.0.1:1", &stage);
            let loaded = synapsor::config::parse(&cfg, std::path::Path::new("t.yaml")).unwrap();
            let err = start_error(loaded.config).await;
            assert!(err.contains(expected), "{file}: {err}");
        }
    }
}

/// An interpreter needs more memory than a compiled plugin: a `memory_limit` too small for
/// its first instance stops the load with the limit to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_memory_for_an_interpreter_names_the_limit_to_raise() {
    for file in ["header_rewrite_py", "header_rewrite_js"] {
        let stage = wasm_stage("rewrite", file, ", memory_limit: 4MiB");
        let cfg = support::staged_config("127.0.0.1:1", &stage);
        let loaded = synapsor::config::parse(&cfg, std::path::Path::new("t.yaml")).unwrap();
        let err = start_error(loaded.config).await;
        assert!(
            err.contains("memory_limit (4MiB): raise memory_limit"),
            "{file}: {err}"
        );
    }
}

async fn contained(file: &str) {
    let b = Backend::start("b").await;
    // 1 s: an interpreter unwinding a deep recursion on a machine busy with other tests took
    // over 200 ms.
    let gw = gateway(&misbehave_config(&b, file, "timeout: 1s")).await;
    let mut c = gw.client().await;
    c.unary(with(&[])).await.expect("warm");
    let cases = [
        ("loop", "timeout"),
        ("alloc", "memory"),
        ("throw", "trap"),
        ("recurse", "trap"),
    ];
    let mut flowed_total = 0;
    for (mode, kind) in cases {
        let mut bad = gw.client().await;
        flowed_total += while_flowing(&gw, async {
            let t = Instant::now();
            let st = bad.unary(with(&[("x-misbehave", mode)])).await.unwrap_err();
            assert_eq!(st.code(), Code::Unavailable, "{file} {mode}: {st:?}");
            assert_eq!(
                st.message(),
                format!("plugin misbehave failed: {kind}"),
                "{file} {mode}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{file} {mode}: {:?}",
                t.elapsed()
            );
        })
        .await;
        bad.unary(with(&[]))
            .await
            .unwrap_or_else(|e| panic!("{file}: after {mode}: {e:?}"));
    }
    assert_eq!(
        b.observed.calls(),
        1 + cases.len() as u64 + flowed_total,
        "{file}: no failed call reached the upstream"
    );
}

in_every_interpreter!(contained, "misbehave");
in_every_interpreter!(message_hooks, "misbehave");
in_every_interpreter!(memory_returns_to_its_baseline, "misbehave");

/// A request-message hook replaces, refuses and fails as the plugin says.
async fn message_hooks(file: &str) {
    let b = Backend::start("b").await;
    let gw = gateway(&misbehave_config(&b, file, "timeout: 1s")).await;
    let mut c = gw.client().await;
    let send = |payload: &str| {
        Request::new(EchoRequest {
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    let r = c.unary(send("replace-me")).await.expect("replaced");
    assert_eq!(r.into_inner().payload, b"replaced", "{file}");
    let st = c.unary(send("reject-me")).await.unwrap_err();
    assert_eq!(
        (st.code(), st.message()),
        (Code::OutOfRange, "message 0 refused"),
        "{file}"
    );
    let st = c.unary(send("throw")).await.unwrap_err();
    assert_eq!(st.message(), "plugin misbehave failed: trap", "{file}");
    let r = c.unary(send("as it is")).await.expect("passed on");
    assert_eq!(r.into_inner().payload, b"as it is", "{file}");
}

/// A one-listener config whose one stage is the misbehave build `file` with these settings.
fn misbehave_config(b: &Backend, file: &str, settings: &str) -> String {
    let stage = format!(
        "      - wasm: {{ name: misbehave, path: \"{}\", {settings} }}",
        plugin(file).display()
    );
    support::staged_config(&b.addr.to_string(), &stage)
}

/// Each refused allocation costs a whole interpreter instance grown to its limit; none leaks.
async fn memory_returns_to_its_baseline(file: &str) {
    let b = Backend::start("b").await;
    let gw = gateway(&misbehave_config(&b, file, "timeout: 1s, max_instances: 4")).await;
    let mut c = gw.client().await;
    for _ in 0..20 {
        c.unary(with(&[])).await.unwrap();
    }
    let baseline = rss_kib();
    for round in 0..30 {
        let st = c
            .unary(with(&[("x-misbehave", "alloc")]))
            .await
            .unwrap_err();
        assert_eq!(
            st.message(),
            "plugin misbehave failed: memory",
            "{file} round {round}"
        );
    }
    for _ in 0..20 {
        c.unary(with(&[])).await.unwrap();
    }
    let after = rss_kib();
    eprintln!("{file}: RSS baseline {baseline} KiB, after {after} KiB");
    // 30 leaked 16 MiB instances would be 480 MiB; allow 96 MiB of allocator noise and the
    // instances kept warm (at most 4).
    assert!(
        after < baseline + 96 * 1024,
        "{file}: RSS grew from {baseline} KiB to {after} KiB"
    );
}
