//! WebAssembly plugins in the request path, with real components built from `plugins/` (Rust
//! for wasm32-wasip2, and one in C): what a plugin sees, header changes, rejections, status
//! overrides, the example plugins, isolation modes and metrics (loading and reload:
//! `plugin_loading.rs`).

use crate::support;

use std::time::Duration;

use support::{
    first_metadata as one, gateway, http_get, metadata_values as seen, staged_config as cfg,
    wasm_stage as wasm,
};
use synapsor_testkit::{Backend, EchoRequest};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

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
