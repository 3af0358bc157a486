//! Built-in stages with real calls: rate limits admit exactly the burst, per key, stacked in the
//! YAML order; concurrency limits count open streams; rejected calls never reach the upstream;
//! interceptor config errors name the listener, the stage and the field.

mod support;

use std::path::Path;

use support::gateway;
use synapsor_testkit::{Backend, EchoRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn cfg(backend: &Backend, interceptors: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    interceptors:
{interceptors}
upstreams:
  - {{ name: u, endpoints: [ \"{}\" ] }}
",
        backend.addr
    )
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
