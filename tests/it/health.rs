//! Active health checks against real backends: the gRPC health protocol takes a NOT_SERVING
//! endpoint out of rotation and brings it back when it serves again (for the server as a whole
//! or a named service); TCP checks take an endpoint nobody listens on out; config errors name
//! the field. Check timeouts are generous (200 ms): a healthy endpoint whose checks time out on
//! a busy test machine would leave rotation.

use crate::support;

use std::collections::HashSet;

use support::{gateway, wait_until};
use synapsor_testkit::{Backend, EchoRequest};
use tonic_health::ServingStatus;

fn cfg(endpoints: &[String], check: &str) -> String {
    support::config(
        endpoints,
        &format!("    balance: round_robin\n    health_check: {check}\n"),
    )
}

/// The backends that answered 40 calls.
async fn answering(gw: &support::TestGateway) -> HashSet<String> {
    let mut c = gw.client().await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let r = c
            .unary(EchoRequest::default())
            .await
            .expect("every call succeeds");
        seen.insert(r.into_inner().backend);
    }
    seen
}

fn healthy(gw: &support::TestGateway, i: usize) -> bool {
    gw.running.upstream("u").unwrap().members().endpoints[i]
        .health
        .healthy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_take_not_serving_endpoints_out_and_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = gateway(&cfg(
        &[a.addr.to_string(), b.addr.to_string()],
        "{ interval: 200ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 3 }",
    ))
    .await;
    assert_eq!(answering(&gw).await.len(), 2, "both in rotation");
    b.health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    wait_until(10, "b out of rotation", || !healthy(&gw, 1)).await;
    assert!(healthy(&gw, 0));
    assert_eq!(
        answering(&gw).await,
        HashSet::from(["a".to_string()]),
        "no call goes to b"
    );
    b.health
        .set_service_status("", ServingStatus::Serving)
        .await;
    wait_until(10, "b back in rotation", || healthy(&gw, 1)).await;
    assert_eq!(answering(&gw).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_ask_about_the_configured_service() {
    let a = Backend::start("a").await;
    a.health
        .set_service_status("billing.v1.Invoices", ServingStatus::NotServing)
        .await;
    let gw = gateway(&cfg(
        &[a.addr.to_string()],
        "{ service: billing.v1.Invoices, interval: 200ms, timeout: 200ms, unhealthy_threshold: 1 }",
    ))
    .await;
    wait_until(10, "a out of rotation for billing", || !healthy(&gw, 0)).await;
    a.health
        .set_service_status("billing.v1.Invoices", ServingStatus::Serving)
        .await;
    wait_until(10, "a back", || healthy(&gw, 0)).await;
    // A service the backend does not know (NOT_FOUND) counts as a failure too.
    let gw2 = gateway(&cfg(
        &[a.addr.to_string()],
        "{ service: nobody.Knows, interval: 200ms, timeout: 200ms, unhealthy_threshold: 1 }",
    ))
    .await;
    wait_until(10, "unknown service fails the check", || !healthy(&gw2, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_take_unreachable_endpoints_out() {
    let a = Backend::start("a").await;
    let nobody = support::free_port();
    let gw = gateway(&cfg(
        &[a.addr.to_string(), nobody.to_string()],
        "{ kind: tcp, interval: 200ms, timeout: 200ms, unhealthy_threshold: 3 }",
    ))
    .await;
    wait_until(10, "the dead endpoint out of rotation", || !healthy(&gw, 1)).await;
    assert!(healthy(&gw, 0), "the live one stays in");
    assert_eq!(answering(&gw).await, HashSet::from(["a".to_string()]));
}

#[test]
fn health_check_config_errors_name_the_field() {
    let err = |check: &str| {
        synapsor::config::parse(
            &cfg(&["127.0.0.1:1".to_string()], check),
            std::path::Path::new("h.yaml"),
        )
        .unwrap_err()
        .to_string()
    };
    let e = err("{ interval: 1s, timeout: 2s }");
    assert!(e.contains("upstreams[0].health_check.timeout"), "{e}");
    let e = err("{ kind: tcp, service: x }");
    assert!(e.contains("upstreams[0].health_check.service"), "{e}");
    let e = err("{ kind: http }");
    assert!(e.contains("h.yaml:") && e.contains("kind"), "{e}");
    let e = err("{ unhealthy_threshold: 0 }");
    assert!(e.contains("unhealthy_threshold"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_upstreams_reports_each_endpoints_state() {
    let a = Backend::start("a").await;
    let nobody = support::free_port();
    let gw = gateway(&cfg(
        &[format!("{}#3", a.addr), nobody.to_string()],
        "{ kind: tcp, interval: 200ms, timeout: 200ms, unhealthy_threshold: 3 }",
    ))
    .await;
    wait_until(10, "the dead endpoint out of rotation", || !healthy(&gw, 1)).await;
    let (status, body) = support::http_get(gw.admin.unwrap(), "/upstreams").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let eps = &v["upstreams"][0]["endpoints"];
    assert_eq!(v["upstreams"][0]["name"], "u");
    assert_eq!(eps[0]["address"], a.addr.to_string());
    assert_eq!(eps[0]["weight"], 3);
    assert_eq!(eps[0]["healthy"], true);
    assert_eq!(eps[0]["in_rotation"], true);
    assert_eq!(eps[1]["address"], nobody.to_string());
    assert_eq!(eps[1]["healthy"], false);
    assert_eq!(eps[1]["in_rotation"], false);
}
