//! WebAssembly plugins in the request path, with real components built from `plugins/` (Rust
//! for wasm32-wasip2, and one in C): what a plugin sees, header changes, rejections, status
//! overrides, the example plugins, isolation modes, metrics and hot reload.

mod support;

use std::time::Duration;

use support::{gateway, http_get, plugin};
use synapsor_testkit::{Backend, EchoRequest};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

/// A one-listener config with these stage lines (indented 6 spaces) in front of `backend`.
fn cfg(backend: &str, stages: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    interceptors:
{stages}
upstreams:
  - {{ name: u, endpoints: [ \"{backend}\" ] }}
"
    )
}

fn wasm(name: &str, file: &str, extra: &str) -> String {
    format!(
        "      - wasm: {{ name: {name}, path: \"{}\", timeout: 2s{extra} }}",
        plugin(file).display()
    )
}

fn seen(b: &Backend, name: &str) -> Vec<String> {
    let md = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    md.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn one(b: &Backend, name: &str) -> Option<String> {
    seen(b, name).into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_the_call_and_rewrites_its_metadata() {
    let b = Backend::start("b").await;
    let stages = format!(
        "      - api_key: {{ keys: [ {{ key: k-alice-123, principal: alice }} ] }}\n{}",
        wasm("probe", "probe", "")
    );
    let gw = gateway(&cfg(&b.addr.to_string(), &stages)).await;
    let mut c = gw.client().await;
    let mut r = Request::new(EchoRequest::default());
    r.set_timeout(Duration::from_secs(30));
    let md = r.metadata_mut();
    md.insert("x-api-key", "k-alice-123".parse().unwrap());
    md.insert("x-probe-drop", "secret".parse().unwrap());
    md.insert("x-probe-multi", "first".parse().unwrap());
    md.insert_bin(
        "x-probe-data-bin",
        MetadataValue::from_bytes(&[0, 1, 2, 255]),
    );
    let resp = c.unary(r).await.expect("the probe lets it through");
    assert_eq!(
        one(&b, "x-probe-method").as_deref(),
        Some("/synapsor.test.v1.Echo/Unary")
    );
    assert_eq!(
        one(&b, "x-probe-authority"),
        Some(gw.addr.to_string()),
        "the :authority tonic sent"
    );
    let peer = one(&b, "x-probe-peer").unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert_eq!(one(&b, "x-probe-principal").as_deref(), Some("alice"));
    let deadline: u64 = one(&b, "x-probe-deadline").unwrap().parse().unwrap();
    assert!(deadline > 20_000 && deadline <= 30_000, "{deadline}");
    assert_eq!(one(&b, "x-probe-now").as_deref(), Some("true"));
    assert_eq!(one(&b, "x-probe-drop"), None, "removed");
    assert_eq!(seen(&b, "x-probe-multi"), ["first", "second"], "appended");
    // -bin values are the base64 text of the wire, unpadded as gRPC sends them.
    assert_eq!(one(&b, "x-probe-bin-echo").as_deref(), Some("AAEC/w"));
    assert_eq!(
        resp.metadata().get("x-probe-status").unwrap(),
        "0",
        "on-response saw OK and set a trailer"
    );
    // Counters are the plugin's, shared by its instances, across calls and connections.
    let first: i64 = one(&b, "x-probe-call").unwrap().parse().unwrap();
    let mut c2 = gw.client().await;
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-api-key", "k-alice-123".parse().unwrap());
    c2.unary(r).await.unwrap();
    assert_eq!(one(&b, "x-probe-call"), Some((first + 1).to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_rejects_with_its_status_and_trailers() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b.addr.to_string(), &wasm("probe", "probe", ""))).await;
    let mut c = gw.client().await;
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-probe-reject", "not today".parse().unwrap());
    let st = c.unary(r).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert_eq!(st.message(), "not today");
    assert_eq!(st.metadata().get("x-probe-why").unwrap(), "asked");
    assert_eq!(b.observed.calls(), 0, "the upstream never saw it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_response_sees_and_overrides_statuses() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b.addr.to_string(), &wasm("probe", "probe", ""))).await;
    let mut c = gw.client().await;
    // A trailers-only failure.
    let st = c
        .unary(EchoRequest {
            fail_code: Code::Internal as i32,
            fail_message: "please override-me".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert_eq!(st.message(), "overridden from 13");
    // A streamed answer: the status is in the trailers after three messages.
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 3,
            fail_code: Code::Aborted as i32,
            fail_message: "override-me later".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    let end = loop {
        match s.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(st)) => break st,
            None => panic!("the stream ended without the overridden status"),
        }
    };
    assert_eq!(got, 3, "the messages passed untouched");
    assert_eq!(end.code(), Code::FailedPrecondition);
    assert_eq!(end.message(), "overridden from 10");
    // A streamed success gets the plugin's trailer.
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = s.next().await {
        m.unwrap();
    }
    let trailers = s.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-probe-status").unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_response_sees_the_gateways_own_errors() {
    let down = support::free_port();
    let gw = gateway(&cfg(&down.to_string(), &wasm("probe", "probe", ""))).await;
    let mut c = gw.client().await;
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert_eq!(st.metadata().get("x-probe-status").unwrap(), "14");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugins_work() {
    let b = Backend::start("b").await;
    let stages = [
        wasm(
            "api-key-guard",
            "api_key_guard",
            ", config: { keys: { k-123: alice } }",
        ),
        wasm(
            "header-rewrite",
            "header_rewrite",
            ", config: { set: { x-env: prod }, append: { x-via: synapsor }, remove: [x-debug], trailers: { x-served-by: synapsor } }",
        ),
        wasm(
            "tenant-quota",
            "tenant_quota",
            ", config: { quota: 2, quotas: { big: 5 } }",
        ),
        wasm(
            "method-deny",
            "method_deny",
            ", config: { deny_prefix: /synapsor.test.v1.Echo/Server }",
        ),
    ]
    .join("\n");
    let gw = gateway(&cfg(&b.addr.to_string(), &stages)).await;
    let mut c = gw.client().await;
    let call = |key: Option<&str>, tenant: &str| {
        let mut r = Request::new(EchoRequest::default());
        if let Some(k) = key {
            r.metadata_mut().insert("x-api-key", k.parse().unwrap());
        }
        r.metadata_mut().insert("x-tenant", tenant.parse().unwrap());
        r.metadata_mut().insert("x-debug", "1".parse().unwrap());
        r.metadata_mut().insert("x-via", "client".parse().unwrap());
        r
    };
    // api-key-guard
    let st = c.unary(call(None, "a")).await.unwrap_err();
    assert_eq!(
        (st.code(), st.message()),
        (Code::Unauthenticated, "missing x-api-key")
    );
    let st = c.unary(call(Some("nope"), "a")).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
    let resp = c.unary(call(Some("k-123"), "a")).await.expect("a good key");
    assert_eq!(one(&b, "x-principal").as_deref(), Some("alice"));
    assert_eq!(one(&b, "x-api-key"), None, "the key is not forwarded");
    // header-rewrite
    assert_eq!(one(&b, "x-env").as_deref(), Some("prod"));
    assert_eq!(seen(&b, "x-via"), ["client", "synapsor"]);
    assert_eq!(one(&b, "x-debug"), None);
    assert_eq!(resp.metadata().get("x-served-by").unwrap(), "synapsor");
    // method-deny (C): a tag on allowed calls, PERMISSION_DENIED on the denied prefix.
    assert_eq!(one(&b, "x-c-plugin").as_deref(), Some("1"));
    let st = c
        .server_stream(call(Some("k-123"), "big"))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert_eq!(st.message(), "denied by method-deny (C)");
    // tenant-quota (it runs before method-deny, so the denied stream counted for "big"); "a"
    // has used 1 of its 2 calls.
    c.unary(call(Some("k-123"), "a")).await.expect("a's second");
    let st = c.unary(call(Some("k-123"), "a")).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert_eq!(st.message(), "tenant a used its quota of 2 calls");
    assert_eq!(st.metadata().get("x-quota-limit").unwrap(), "2");
    // Another tenant, on another connection (likely another worker), has its own count.
    let mut c2 = gw.client().await;
    for _ in 0..4 {
        c2.unary(call(Some("k-123"), "big"))
            .await
            .expect("big's quota is 5");
    }
    let st = c2.unary(call(Some("k-123"), "big")).await.unwrap_err();
    assert_eq!(
        st.code(),
        Code::ResourceExhausted,
        "1 + 4 calls used big's 5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_isolation_gives_every_call_a_fresh_instance() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b.addr.to_string(),
        &wasm(
            "probe",
            "probe",
            ", isolation: per_request, max_instances: 4",
        ),
    ))
    .await;
    let mut c = gw.client().await;
    for i in 1..=20 {
        let resp = c.unary(EchoRequest::default()).await.unwrap();
        assert_eq!(resp.metadata().get("x-probe-status").unwrap(), "0");
        // Counters live in the host, so they survive the instances.
        assert_eq!(one(&b, "x-probe-call"), Some(i.to_string()));
    }
    // Many at once: no more than max_instances run, the rest wait their turn.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.unary(EchoRequest::default()).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every call served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_metrics_are_served() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b.addr.to_string(), &wasm("probe", "probe", ""))).await;
    let mut c = gw.client().await;
    for _ in 0..3 {
        c.unary(EchoRequest::default()).await.unwrap();
    }
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-probe-reject", "no".parse().unwrap());
    c.unary(r).await.unwrap_err();
    let (status, body) = http_get(gw.admin.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "synapsor_plugin_calls_total{plugin=\"probe\",hook=\"on_request\"} 4",
        "synapsor_plugin_calls_total{plugin=\"probe\",hook=\"on_response\"} 3",
        "synapsor_plugin_rejections_total{plugin=\"probe\"} 1",
        "synapsor_plugin_errors_total{plugin=\"probe\",kind=\"timeout\"} 0",
        "synapsor_plugin_call_seconds_count{plugin=\"probe\"} 7",
    ] {
        assert!(body.contains(line), "{line} missing from:\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_file_is_swapped_in_and_a_broken_one_is_refused() {
    let b = Backend::start("b").await;
    let dir = std::env::temp_dir().join(format!("synapsor-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("live.wasm");
    std::fs::copy(plugin("probe"), &file).unwrap();
    let stages = format!(
        "      - wasm: {{ name: live, path: \"{}\", timeout: 2s }}",
        file.display()
    );
    let gw = gateway(&cfg(&b.addr.to_string(), &stages)).await;
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
    assert!(one(&b, "x-probe-method").is_some(), "the probe serves");
    // A stream in flight when the file changes finishes on the version it started with.
    let mut slow = c
        .server_stream(EchoRequest {
            reply_count: 4,
            delay_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    slow.next().await.unwrap().unwrap();
    // Write the new version beside the file and rename it over, as deployments do.
    let tmp = dir.join("live.wasm.tmp");
    std::fs::copy(plugin("header_rewrite"), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let mut swapped = false;
    for _ in 0..200 {
        c.unary(EchoRequest::default())
            .await
            .expect("calls keep flowing");
        if one(&b, "x-probe-method").is_none() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the new version serves within 20 s");
    while let Some(m) = slow.next().await {
        m.expect("the old version finishes its stream");
    }
    let trailers = slow.trailers().await.unwrap().unwrap();
    assert_eq!(
        trailers.get("x-probe-status").unwrap(),
        "0",
        "on-response ran on the version the call started with"
    );
    // A broken file: the reload fails and the working version keeps serving.
    std::fs::write(&tmp, b"not a component").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let admin = gw.admin.unwrap();
    let mut failed = false;
    for _ in 0..100 {
        let (_, body) = http_get(admin, "/metrics").await;
        if body.contains("synapsor_plugin_reloads_total{plugin=\"live\",result=\"failed\"} 1") {
            assert!(body.contains("synapsor_plugin_reloads_total{plugin=\"live\",result=\"ok\"} 1"));
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "the broken file was noticed and refused");
    c.unary(EchoRequest::default())
        .await
        .expect("the previous version still serves");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_cannot_load_stop_the_start_with_a_clear_error() {
    let b = Backend::start("b").await;
    let start = |stages: String| {
        let yaml = cfg(&b.addr.to_string(), &stages);
        async move {
            let loaded = synapsor::config::parse(&yaml, std::path::Path::new("test.yaml")).unwrap();
            let gw = synapsor::Gateway::bind(loaded.config).await.unwrap();
            match gw.start() {
                Ok(_) => panic!("started"),
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let e = start(wasm("m", "misbehave", ", config: { fail_init: true }")).await;
    assert!(
        e.contains("interceptors[0].wasm") && e.contains("init failed: refusing to start"),
        "{e}"
    );
    let e = start("      - wasm: { name: gone, path: /nonexistent/x.wasm }".into()).await;
    assert!(e.contains("cannot read plugin /nonexistent/x.wasm"), "{e}");
    let junk = std::env::temp_dir().join(format!("synapsor-junk-{}.wasm", std::process::id()));
    std::fs::write(&junk, b"\0asm but not really").unwrap();
    let e = start(format!(
        "      - wasm: {{ name: bad, path: \"{}\" }}",
        junk.display()
    ))
    .await;
    let _ = std::fs::remove_file(&junk);
    assert!(e.contains("is not a valid component"), "{e}");
}

#[test]
fn plugin_config_errors_name_the_field() {
    let yaml = |extra: &str| {
        format!(
            "listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    interceptors:
      - wasm: {{ name: p, path: p.wasm{extra} }}
upstreams:
  - {{ name: u, endpoints: [ \"127.0.0.1:1\" ] }}
"
        )
    };
    let err = |extra: &str| {
        synapsor::config::parse(&yaml(extra), std::path::Path::new("t.yaml"))
            .unwrap_err()
            .to_string()
    };
    let e = err(", memory_limit: 1GiB");
    assert!(
        e.contains("t.yaml:6") && e.contains("listeners[0].interceptors[0].wasm.memory_limit"),
        "{e}"
    );
    let e = err(", isolation: sometimes");
    assert!(e.contains("t.yaml:6") && e.contains("isolation"), "{e}");
    let e = err(", timeout: 0ms");
    assert!(e.contains("wasm.timeout"), "{e}");
    let e = err(", bogus: 1");
    assert!(e.contains("unknown field `bogus`"), "{e}");
    let ok = synapsor::config::parse(
        &yaml(", config: { tenants: [a, b] }, isolation: reuse, timeout: 5ms, memory_limit: 16MiB, on_error: deny, max_instances: 64"),
        std::path::Path::new("t.yaml"),
    )
    .expect("the issue's example parses");
    let synapsor::config::StageConfig::Wasm(w) = &ok.config.listeners[0].interceptors[0] else {
        panic!()
    };
    assert_eq!(w.config_json().unwrap(), r#"{"tenants":["a","b"]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_a_later_0_1_contract_loads() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b.addr.to_string(),
        &wasm(
            "later",
            "method_deny_0_1_9",
            ", config: { deny_prefix: /nope. }",
        ),
    ))
    .await;
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
    assert_eq!(one(&b, "x-c-plugin").as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_response_false_skips_the_response_hook() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b.addr.to_string(),
        &wasm("probe", "probe", ", on_response: false"),
    ))
    .await;
    let mut c = gw.client().await;
    let resp = c.unary(EchoRequest::default()).await.unwrap();
    assert!(one(&b, "x-probe-method").is_some(), "on-request still runs");
    assert!(resp.metadata().get("x-probe-status").is_none());
    let st = c
        .unary(EchoRequest {
            fail_code: Code::Internal as i32,
            fail_message: "override-me".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Internal, "not overridden");
}
