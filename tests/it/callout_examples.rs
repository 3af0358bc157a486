//! The callout examples (`plugins/examples/`) end to end, against testkit's real `Authz` and
//! `Tokens` services: `ext-authz` (in every language, from `plugin_languages`) allows, denies with the service's status, caches decisions for
//! its TTL and follows `on_error` when the service is down; `token-cache` attaches one token
//! fetched once however many calls race for it, and refreshes it before it expires.

use std::time::Duration;

use crate::plugin_callouts::config;
use crate::support;

use support::{first_metadata, gateway, http_get, wasm_stage as wasm, TestGateway};
use synapsor_testkit::{AuthzOptions, AuthzServer, Backend, EchoClient, EchoRequest};
use tonic::transport::Channel;
use tonic::Code;

async fn call(
    c: &mut EchoClient<Channel>,
    md: &[(&'static str, &str)],
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(EchoRequest::default());
    for (k, v) in md {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    c.unary(req).await.map(|_| ())
}

/// A gateway whose one stage is the ext-authz build `file` (`ext_authz`, `ext_authz_py`, …)
/// asking `authz`.
async fn authz_gateway(
    b: &Backend,
    authz: &AuthzServer,
    file: &str,
    config_extra: &str,
) -> TestGateway {
    let stage = wasm(
        "authz",
        file,
        &format!(", callouts: {{ groups: [authz], timeout: 500ms }}, config: {{ cache_ttl_ms: 400{config_extra} }}"),
    );
    gateway(&config(b, &stage, &[("authz", authz.addr().to_string())])).await
}

/// ext-authz built as `file` allows, denies with the service's status, caches decisions for
/// its TTL and follows `on_error` when the service is down (run for every language's build by
/// `plugin_languages`).
pub async fn ext_authz_behaves(file: &str) {
    let b = Backend::start("b").await;
    let authz = AuthzServer::start(AuthzOptions::default());
    let gw = authz_gateway(&b, &authz, file, "").await;
    let mut c = gw.client().await;
    let ada = [
        ("authorization", "Bearer allow-ada"),
        ("x-authz-user", "forged"),
    ];
    call(&mut c, &ada).await.expect("allowed");
    assert_eq!(
        first_metadata(&b, "x-authz-user").as_deref(),
        Some("allow-ada"),
        "the service's header replaces the client's"
    );
    let asked = authz.last_check().expect("the service was asked");
    assert_eq!(asked.method, "/synapsor.test.v1.Echo/Unary");
    call(&mut c, &ada).await.expect("allowed, from the cache");
    assert_eq!(authz.checks(), 1, "the second decision came from the cache");

    let bob = [("authorization", "Bearer deny-bob")];
    for _ in 0..2 {
        let st = call(&mut c, &bob).await.unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied);
        assert_eq!(
            st.message(),
            "token deny-bob may not call /synapsor.test.v1.Echo/Unary"
        );
    }
    assert_eq!(authz.checks(), 2, "denials are cached too");
    let st = call(&mut c, &[]).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    call(&mut c, &ada).await.expect("allowed");
    assert_eq!(
        authz.checks(),
        4,
        "the cached decision expired: asked again"
    );

    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    for line in [
        "synapsor_wasm_ext_authz_decisions_total{plugin=\"authz\",result=\"allow\",cache=\"hit\"} 1",
        "synapsor_wasm_ext_authz_decisions_total{plugin=\"authz\",result=\"deny\",cache=\"hit\"} 1",
        "synapsor_plugin_callouts_total{plugin=\"authz\",target=\"authz\",result=\"ok\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // The service goes away: `on_error: deny` (the default) refuses, `allow` lets calls through.
    let open = authz_gateway(&b, &authz, file, ", on_error: allow").await;
    authz.stop().await;
    let new = [("authorization", "Bearer allow-new")];
    let st = call(&mut c, &new).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(
        st.message()
            .starts_with("authorization service unavailable"),
        "{}",
        st.message()
    );
    let mut c = open.client().await;
    call(&mut c, &new).await.expect("on_error: allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_a_plugin_waits_on_a_callout_is_the_clients() {
    let b = Backend::start("b").await;
    let authz = AuthzServer::start(AuthzOptions {
        slow_delay: Duration::from_millis(400),
        ..Default::default()
    });
    let gw = authz_gateway(&b, &authz, "ext_authz", "").await;
    let mut c = gw.client().await;
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer slow-1".parse().unwrap());
    req.set_timeout(Duration::from_millis(1500));
    c.unary(req).await.expect("allowed after 400 ms");
    let sent = b.observed.last_timeout.lock().unwrap().clone().unwrap();
    let micros: u64 = sent.trim_end_matches('u').parse().unwrap();
    assert!(
        micros <= 1_100_000,
        "the upstream got what was left of 1.5 s after the plugin's 400 ms wait: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cache_fetches_one_token_for_racing_calls_and_refreshes_it() {
    let b = Backend::start("b").await;
    let tokens = AuthzServer::start(AuthzOptions {
        token_lifetime: Duration::from_millis(1500),
        ..Default::default()
    });
    let stage = wasm(
        "tokens",
        "token_cache",
        ", callouts: { groups: [tokens] }, config: { audience: billing, refresh_before_ms: 1000, wait_ms: 1000 }",
    );
    let gw = gateway(&config(
        &b,
        &stage,
        &[("tokens", tokens.addr().to_string())],
    ))
    .await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut c = synapsor_testkit::client(addr).await;
                for _ in 0..5 {
                    call(&mut c, &[]).await.expect("a call with a token");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(tokens.issues(), 1, "one refresh for 40 racing calls");
    assert_eq!(tokens.last_audience().as_deref(), Some("billing"));
    assert_eq!(
        first_metadata(&b, "authorization").as_deref(),
        Some("Bearer tok-1")
    );
    // 1.5 s tokens are refreshed 1 s before they expire.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = gw.client().await;
    call(&mut c, &[]).await.unwrap();
    assert_eq!(
        first_metadata(&b, "authorization").as_deref(),
        Some("Bearer tok-2")
    );
    assert_eq!(tokens.issues(), 2);
}
