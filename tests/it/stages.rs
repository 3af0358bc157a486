//! Built-in stages with real calls: rate limits admit exactly the burst, per key, stacked in the
//! YAML order; concurrency limits count open streams; rejected calls never reach the upstream;
//! interceptor config errors name the listener, the stage and the field.

use crate::support;

use std::path::Path;

use support::gateway;
use synapsor_testkit::{Backend, EchoRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn cfg(backend: &Backend, interceptors: &str) -> String {
    support::staged_config(&backend.addr.to_string(), interceptors)
}

fn tenant(t: &str) -> Request<EchoRequest> {
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut().insert("x-tenant", t.parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_admits_exactly_the_burst() {
    let b = Backend::start("b").await;
    // One call an hour after a burst of 3: the test never waits for a refill.
    let gw = gateway(&cfg(
        &b,
        "      - rate_limit: { rate: 1, per: 1h, burst: 3 }",
    ))
    .await;
    let mut c = gw.client().await;
    for _ in 0..3 {
        c.unary(EchoRequest::default())
            .await
            .expect("within the burst");
    }
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert!(
        st.message().contains("rate limit of 1 per 1h (burst 3)"),
        "{st:?}"
    );
    let pushback: u64 = st
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 1_000_000, "about an hour: {pushback}");
    assert_eq!(
        b.observed.calls(),
        3,
        "the rejected call never reached the upstream"
    );
    // The limit is the listener's, whichever worker serves the connection.
    let mut c2 = gw.client().await;
    assert_eq!(
        c2.unary(EchoRequest::default()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_limits_are_isolated_and_stack_in_order() {
    let b = Backend::start("b").await;
    let stages = "      - rate_limit: { rate: 1, per: 1h, burst: 1, key: \"metadata:x-tenant\", missing_key: reject }
      - rate_limit: { rate: 1, per: 1h, burst: 3 }";
    let gw = gateway(&cfg(&b, stages)).await;
    let mut c = gw.client().await;
    c.unary(tenant("a")).await.expect("a's first call");
    let st = c.unary(tenant("a")).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert!(
        st.message().contains("metadata:x-tenant=a"),
        "the first stage refused: {st:?}"
    );
    // a's refused call was stopped by the first stage, so it took nothing from the second.
    c.unary(tenant("b")).await.expect("b has its own bucket");
    c.unary(tenant("c"))
        .await
        .expect("the global burst of 3 still has room");
    let st = c.unary(tenant("d")).await.unwrap_err();
    assert!(
        st.message().contains("(global)"),
        "the second stage refused: {st:?}"
    );
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(
        st.code(),
        Code::Unauthenticated,
        "missing key metadata: {st:?}"
    );
    assert_eq!(b.observed.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_counts_open_streams() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b,
        "      - concurrency_limit: { max: 2, methods: [\"/synapsor.test.v1.Echo/*\"] }",
    ))
    .await;
    let mut c = gw.client().await;
    let open = || EchoRequest {
        reply_count: 10_000,
        delay_ms: 20,
        ..Default::default()
    };
    let mut s1 = c.server_stream(open()).await.unwrap().into_inner();
    s1.next().await.unwrap().unwrap();
    let mut s2 = c.server_stream(open()).await.unwrap().into_inner();
    s2.next().await.unwrap().unwrap();
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert!(st.message().contains("concurrency limit of 2"), "{st:?}");
    drop(s1);
    // The slot comes back once the stream has ended through the gateway.
    let t = std::time::Instant::now();
    loop {
        match c.unary(EchoRequest::default()).await {
            Ok(_) => break,
            Err(st) => assert_eq!(st.code(), Code::ResourceExhausted),
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "slot never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(s2);
}

#[test]
fn interceptor_errors_name_listener_stage_and_field() {
    let base =
        "listeners:\n  - name: l\n    listen: 127.0.0.1:0\n    upstream: u\n    interceptors:\n";
    let tail = "upstreams:\n  - { name: u, endpoints: [ \"a:1\" ] }\n";
    let err = |stages: &str| {
        synapsor::config::parse(&format!("{base}{stages}{tail}"), Path::new("i.yaml")).unwrap_err()
    };
    let e = err("      - rate_limti: { rate: 1 }\n");
    assert!(e.message.contains("unknown variant `rate_limti`"), "{e}");
    assert_eq!(e.location.unwrap().0, 6);
    let e = err("      - rate_limit: { rate: 0 }\n");
    assert_eq!(e.field, "listeners[0].interceptors[0].rate_limit.rate");
    assert_eq!(e.location.unwrap().0, 6);
    let e = err(
        "      - rate_limit: { rate: 5 }\n      - concurrency_limit: { max: 1, key: tenant }\n",
    );
    assert!(
        e.message
            .contains("use global, peer_ip, method or metadata:NAME"),
        "{e}"
    );
    assert_eq!(e.location.unwrap().0, 7);
    let e = err("      - concurrency_limit: { max: 1, methods: [ \"pkg.Svc/*\" ] }\n");
    assert_eq!(
        e.field,
        "listeners[0].interceptors[0].concurrency_limit.methods[0]"
    );
    assert!(e.message.contains("invalid method pattern"), "{e}");
}

fn keyed(key: &str, principal: Option<&str>) -> Request<EchoRequest> {
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    if let Some(p) = principal {
        r.metadata_mut().insert("x-principal", p.parse().unwrap());
    }
    r
}

fn seen(b: &Backend, name: &str) -> Option<String> {
    let md = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    md.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_authenticates_and_forwards_the_principal() {
    let b = Backend::start("b").await;
    std::env::set_var(
        "SYNAPSOR_TEST_KEYS_1",
        "env-key-0001=carol, env-key-0002=dave",
    );
    let stages = "      - api_key:
          keys:
            - { key: k-alice-123, principal: alice }
            - { key: k-bob-4567, principal: bob, methods: [\"/other.Svc/*\"] }
          keys_env: SYNAPSOR_TEST_KEYS_1";
    let gw = gateway(&cfg(&b, stages)).await;
    let mut c = gw.client().await;
    c.unary(keyed("k-alice-123", Some("mallory")))
        .await
        .expect("a good key");
    assert_eq!(
        seen(&b, "x-principal").as_deref(),
        Some("alice"),
        "principal set, spoof replaced"
    );
    assert_eq!(seen(&b, "x-api-key"), None, "the key is not forwarded");
    c.unary(keyed("env-key-0002", None))
        .await
        .expect("a key from the environment");
    assert_eq!(seen(&b, "x-principal").as_deref(), Some("dave"));
    let st = c.unary(keyed("k-alice-124", None)).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
    assert!(
        st.message().contains("missing API key in x-api-key"),
        "{st:?}"
    );
    let st = c.unary(keyed("k-bob-4567", None)).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(
        st.message()
            .contains("\"bob\" may not call /synapsor.test.v1.Echo/Unary"),
        "{st:?}"
    );
    assert_eq!(
        b.observed.calls(),
        2,
        "refused calls never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_runs_before_a_per_principal_limit() {
    let b = Backend::start("b").await;
    let stages = "      - api_key: { keys: [ { key: k-alice-123, principal: alice }, { key: k-bob-4567, principal: bob } ], forward: true }
      - rate_limit: { rate: 1, per: 1h, burst: 1, key: \"metadata:x-principal\" }";
    let gw = gateway(&cfg(&b, stages)).await;
    let mut c = gw.client().await;
    c.unary(keyed("k-alice-123", Some("bob"))).await.unwrap();
    assert_eq!(
        seen(&b, "x-api-key").as_deref(),
        Some("k-alice-123"),
        "forward: true"
    );
    let st = c
        .unary(keyed("k-alice-123", Some("bob")))
        .await
        .unwrap_err();
    assert!(
        st.message().contains("metadata:x-principal=alice"),
        "keyed by the real principal: {st:?}"
    );
    c.unary(keyed("k-bob-4567", None))
        .await
        .expect("bob has his own bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_file_is_reread() {
    let b = Backend::start("b").await;
    let dir = std::env::temp_dir().join(format!("synapsor-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.yaml");
    std::fs::write(&file, "- { key: old-key-0001, principal: alice }\n").unwrap();
    let stages = format!("      - api_key: {{ keys_file: \"{}\" }}", file.display());
    let gw = gateway(&cfg(&b, &stages)).await;
    let mut c = gw.client().await;
    c.unary(keyed("old-key-0001", None))
        .await
        .expect("the file's key");
    std::fs::write(&file, "- { key: new-key-0002, principal: alice }\n").unwrap();
    let t = std::time::Instant::now();
    while c.unary(keyed("new-key-0002", None)).await.is_err() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "new key never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let st = c.unary(keyed("old-key-0001", None)).await.unwrap_err();
    assert_eq!(
        st.code(),
        Code::Unauthenticated,
        "the rotated-out key fails"
    );
    // A broken file keeps the keys in force.
    std::fs::write(&file, "- { key: short }\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    c.unary(keyed("new-key-0002", None))
        .await
        .expect("still the last good keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_by_method_peer_and_principal() {
    let b = Backend::start("b").await;
    let stages = "      - api_key: { keys: [ { key: k-alice-123, principal: alice }, { key: k-bob-4567, principal: bob } ] }
      - access:
          allow: [ { methods: [\"/synapsor.test.v1.Echo/Unary\"], peers: [\"127.0.0.0/8\"], principals: [alice] } ]
          default: deny";
    let gw = gateway(&cfg(&b, stages)).await;
    let mut c = gw.client().await;
    c.unary(keyed("k-alice-123", None))
        .await
        .expect("alice, from loopback, Unary");
    let st = c.unary(keyed("k-bob-4567", None)).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-api-key", "k-alice-123".parse().unwrap());
    let st = c.server_stream(r).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "other methods: {st:?}");
    // Deny by peer: every call from loopback.
    let b2 = Backend::start("b2").await;
    let gw2 = gateway(&cfg(
        &b2,
        "      - access: { deny: [ { peers: [\"127.0.0.1\", \"::1\"] } ], default: allow }",
    ))
    .await;
    let st = gw2
        .client()
        .await
        .unary(EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().contains("deny[0]"), "{st:?}");
    assert_eq!(b2.observed.calls(), 0);
}

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_mix_of_calls() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b,
        "      - metrics: {}\n      - rate_limit: { rate: 1, per: 1h, burst: 5 }",
    ))
    .await;
    let mut c = gw.client().await;
    for _ in 0..3 {
        c.unary(EchoRequest::default()).await.unwrap();
    }
    let notfound = EchoRequest {
        fail_code: Code::NotFound as i32,
        ..Default::default()
    };
    assert_eq!(c.unary(notfound).await.unwrap_err().code(), Code::NotFound);
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while s.next().await.is_some() {}
    assert_eq!(
        c.unary(EchoRequest::default()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    let (status, text) = support::http_get(gw.admin.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    let unary = "listener=\"l\",grpc_service=\"synapsor.test.v1.Echo\",grpc_method=\"Unary\"";
    let stream =
        "listener=\"l\",grpc_service=\"synapsor.test.v1.Echo\",grpc_method=\"ServerStream\"";
    assert_eq!(
        metric(&text, &format!("grpc_server_started_total{{{unary}}}")),
        5
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_handled_total{{{unary},grpc_code=\"OK\"}}")
        ),
        3
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_handled_total{{{unary},grpc_code=\"NotFound\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_handled_total{{{unary},grpc_code=\"ResourceExhausted\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_handled_total{{{stream},grpc_code=\"OK\"}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_handling_seconds_count{{{unary}}}")
        ),
        5
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_handling_seconds_bucket{{le=\"+Inf\",{unary}}}")
        ),
        5
    );
    assert_eq!(
        metric(&text, "synapsor_interceptor_rejected_total{listener=\"l\",stage=\"rate_limit\",reason=\"ResourceExhausted\"}"),
        1
    );
    assert_eq!(metric(&text, "synapsor_calls_in_flight{listener=\"l\"}"), 0);
    // Messages each way: the refused call's request was never read.
    assert_eq!(
        metric(&text, &format!("grpc_server_msg_received_total{{{unary}}}")),
        4
    );
    assert_eq!(
        metric(&text, &format!("grpc_server_msg_sent_total{{{unary}}}")),
        3
    );
    assert_eq!(
        metric(
            &text,
            &format!("grpc_server_msg_received_total{{{stream}}}")
        ),
        1
    );
    assert_eq!(
        metric(&text, &format!("grpc_server_msg_sent_total{{{stream}}}")),
        3
    );
    assert!(metric(&text, &format!("synapsor_bytes_sent_total{{{stream}}}")) >= 15);
    assert_eq!(
        metric(
            &text,
            "synapsor_upstream_handled_total{listener=\"l\",upstream=\"u\",grpc_code=\"OK\"}"
        ),
        4
    );
    assert_eq!(
        metric(
            &text,
            "synapsor_upstream_handled_total{listener=\"l\",upstream=\"u\",grpc_code=\"NotFound\"}"
        ),
        1
    );
    assert!(
        metric(
            &text,
            &format!(
                "synapsor_upstream_connections{{upstream=\"u\",endpoint=\"{}\"}}",
                b.addr
            )
        ) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_labels_are_bounded() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b, "      - metrics: { max_methods: 3 }")).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    // Forty random methods from a hostile client: only three get labels of their own.
    for i in 0..40 {
        let req = http::Request::post(format!("http://{}/rand.Svc{i}/M{i}", gw.addr))
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let _ = resp.await;
        send = send.ready().await.unwrap();
    }
    let (_, text) = support::http_get(gw.admin.unwrap(), "/metrics").await;
    let labelled = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_started_total{"))
        .count();
    assert_eq!(labelled, 4, "three methods and other:\n{text}");
    assert_eq!(
        metric(&text, "grpc_server_started_total{listener=\"l\",grpc_service=\"other\",grpc_method=\"other\"}"),
        37
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_json_line_per_call() {
    let b = Backend::start("b").await;
    let dir = std::env::temp_dir().join(format!("synapsor-alog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.log");
    let _ = std::fs::remove_file(&file);
    let stages = format!(
        "      - access_log: {{ format: json, output: \"{}\" }}
      - api_key: {{ keys: [ {{ key: k-alice-123, principal: alice }} ] }}",
        file.display()
    );
    let gw = gateway(&cfg(&b, &stages)).await;
    let mut c = gw.client().await;
    let mut r = keyed("k-alice-123", None);
    r.get_mut().payload = vec![1; 300];
    c.unary(r).await.unwrap();
    let mut r = Request::new(EchoRequest {
        fail_code: Code::NotFound as i32,
        ..Default::default()
    });
    r.metadata_mut()
        .insert("x-api-key", "k-alice-123".parse().unwrap());
    c.unary(r).await.unwrap_err();
    c.unary(EchoRequest::default()).await.unwrap_err(); // no key: refused by api_key
    let t = std::time::Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "lines never written: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["method"], "/synapsor.test.v1.Echo/Unary");
    assert_eq!(first["grpc_status"], 0);
    assert_eq!(
        first["principal"], "alice",
        "set by the api_key stage after the log saw the call"
    );
    assert_eq!(first["upstream"], b.addr.to_string());
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["bytes_in"].as_u64().unwrap() >= 300, "{first}");
    assert!(first["bytes_out"].as_u64().unwrap() >= 300, "{first}");
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["grpc_status"], 5);
    assert_eq!(
        lines[2]["grpc_status"], 16,
        "refused by the later api_key stage"
    );
    assert_eq!(lines[2]["upstream"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_stages_apply_only_to_their_route() {
    let b = Backend::start("b").await;
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    routes:
      - path_prefix: /synapsor.test.v1.Echo/ServerStream
        upstream: u
        interceptors:
          - rate_limit: {{ rate: 1, per: 1h, burst: 1 }}
upstreams:
  - {{ name: u, endpoints: [ \"{}\" ] }}
",
        b.addr
    );
    let gw = gateway(&yaml).await;
    let mut c = gw.client().await;
    let one = || EchoRequest {
        reply_count: 1,
        ..Default::default()
    };
    let mut s = c.server_stream(one()).await.unwrap().into_inner();
    while s.next().await.is_some() {}
    let st = c.server_stream(one()).await.unwrap_err();
    assert_eq!(
        st.code(),
        Code::ResourceExhausted,
        "the route's own limit: {st:?}"
    );
    for _ in 0..5 {
        c.unary(EchoRequest::default())
            .await
            .expect("other calls take the default route");
    }
    let bad = yaml.replace("rate: 1, per", "rate: 0, per");
    let e = synapsor::config::parse(&bad, Path::new("r.yaml")).unwrap_err();
    assert_eq!(
        e.field,
        "listeners[0].routes[0].interceptors[0].rate_limit.rate"
    );
    assert_eq!(e.location.unwrap().0, 10);
}
