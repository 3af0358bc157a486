//! Callouts (contract 0.2.1) over real sockets: a plugin (`plugins/testing/state-probe`) calls a
//! real tonic service (testkit's `Authz`) through the gateway's balancer and pool — allowed,
//! denied with the service's status, timed out, the group down, a group it may not call — and
//! the results show in `/metrics` per plugin and target.

use std::time::Duration;

use crate::support;

use support::{gateway, http_get, wasm_stage as wasm, TestGateway};
use synapsor_testkit::{AuthzOptions, AuthzServer, Backend, EchoClient, EchoRequest};
use tonic::transport::Channel;
use tonic::Code;

/// A config with listener `l` (its stages `stages`) before group `u` (the echo backend), and
/// the extra upstream groups `groups` (name, endpoint).
pub fn config(backend: &Backend, stages: &str, groups: &[(&str, String)]) -> String {
    let mut out = support::staged_config(&backend.addr.to_string(), stages);
    for (name, ep) in groups {
        out.push_str(&format!(
            "  - {{ name: {name}, endpoints: [ \"{ep}\" ] }}\n"
        ));
    }
    out
}

/// One state-probe operation: the call's metadata; the probe's answer (its status code and
/// message).
pub async fn probe(c: &mut EchoClient<Channel>, md: &[(&str, &str)]) -> (Code, String) {
    let mut req = tonic::Request::new(EchoRequest::default());
    for (k, v) in md {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).expect("metadata name");
        req.metadata_mut()
            .insert(key, v.parse().expect("metadata value"));
    }
    match c.unary(req).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(st) => (st.code(), st.message().to_string()),
    }
}

/// The result of one probe operation (FAILED_PRECONDITION carries it).
pub async fn result(c: &mut EchoClient<Channel>, md: &[(&str, &str)]) -> String {
    let (code, msg) = probe(c, md).await;
    assert_eq!(code, Code::FailedPrecondition, "{md:?}: {code:?} {msg}");
    msg
}

const CHECK: &str = "/synapsor.test.v1.Authz/Check";

fn callout<'a>(group: &'a str, token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-op", "callout"),
        ("x-group", group),
        ("x-method", CHECK),
        ("x-callout-authorization", token),
    ]
}

async fn probe_gateway(authz: &AuthzServer, extra: &str) -> (Backend, TestGateway) {
    let b = Backend::start("b").await;
    let closed = support::free_port();
    let stage = wasm(
        "probe",
        "state_probe",
        &format!(", callouts: {{ groups: [authz, down], timeout: 1s{extra} }}"),
    );
    let groups = [
        ("authz", authz.addr().to_string()),
        ("down", closed.to_string()),
    ];
    let gw = gateway(&config(&b, &stage, &groups)).await;
    (b, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callouts_reach_a_real_service_through_the_pool_and_fail_with_typed_errors() {
    let authz = AuthzServer::start(AuthzOptions {
        slow_delay: Duration::from_secs(3),
        ..Default::default()
    });
    let (_b, gw) = probe_gateway(&authz, "").await;
    let mut c = gw.client().await;

    let ok = result(&mut c, &callout("authz", "Bearer allow-ada")).await;
    assert!(ok.starts_with("ok:") && ok.contains("allow-ada"), "{ok}");
    assert_eq!(authz.checks(), 1);

    let denied = result(&mut c, &callout("authz", "Bearer deny-bob")).await;
    assert!(
        denied.starts_with("err:status:7:token deny-bob may not call"),
        "the service's status and message: {denied}"
    );

    let mut slow = callout("authz", "Bearer slow-1");
    slow.push(("x-timeout-ms", "200"));
    let started = std::time::Instant::now();
    assert_eq!(result(&mut c, &slow).await, "err:timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "the plugin's 200 ms, not the hook's CPU timeout nor the service's 3 s: {waited:?}"
    );

    // The callout carries the shortest of callouts.timeout (1 s), the plugin's wish and what is
    // left of the client's own deadline.
    let mut req = tonic::Request::new(EchoRequest::default());
    for (k, v) in callout("authz", "Bearer allow-deadline") {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    req.set_timeout(Duration::from_millis(300));
    let st = c.unary(req).await.unwrap_err();
    assert!(st.message().starts_with("ok:"), "{st:?}");
    let sent = authz.last_timeout().expect("grpc-timeout sent");
    let micros: u64 = sent.trim_end_matches('u').parse().unwrap_or(u64::MAX);
    assert!(
        micros <= 300_000,
        "the client's 300 ms bound the callout: {sent}"
    );

    let down = result(&mut c, &callout("down", "Bearer allow-1")).await;
    assert!(down.starts_with("err:unavailable"), "{down}");

    let refused = result(&mut c, &callout("u", "Bearer allow-1")).await;
    assert!(
        refused.starts_with("err:not-allowed") && refused.contains("\"u\""),
        "a group not in callouts.groups: {refused}"
    );
    let mut bad = callout("authz", "Bearer allow-1");
    bad[2] = ("x-method", "not-a-path");
    let bad = result(&mut c, &bad).await;
    assert!(bad.starts_with("err:invalid"), "{bad}");

    // Other calls are untouched throughout.
    c.unary(EchoRequest::default()).await.expect("a plain call");

    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    for (target, result) in [
        ("authz", "ok"),
        ("authz", "status"),
        ("authz", "timeout"),
        ("authz", "invalid"),
        ("down", "unavailable"),
        ("", "not_allowed"),
    ] {
        let line = format!(
            "synapsor_plugin_callouts_total{{plugin=\"probe\",target=\"{target}\",result=\"{result}\"}} {}",
            if result == "ok" { 2 } else { 1 }
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(
        metrics
            .contains("synapsor_plugin_callout_seconds_count{plugin=\"probe\",target=\"authz\"} 4"),
        "sent calls are timed:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callouts_are_bounded_in_flight_per_plugin() {
    let authz = AuthzServer::start(AuthzOptions {
        slow_delay: Duration::from_millis(600),
        ..Default::default()
    });
    let (_b, gw) = probe_gateway(&authz, ", max_in_flight: 2").await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut c = synapsor_testkit::client(addr).await;
                result(&mut c, &callout("authz", "Bearer slow-x")).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let ok = answers.iter().filter(|a| a.starts_with("ok:")).count();
    let limited = answers
        .iter()
        .filter(|a| a.starts_with("err:limited"))
        .count();
    assert_eq!((ok, limited), (2, 4), "{answers:?}");
}
