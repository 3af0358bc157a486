//! The authorization and token services, called over the network with tonic.

use std::time::{Duration, Instant};

use synapsor_testkit::authz::{authz_client, tokens_client, AuthzOptions, AuthzServer};
use synapsor_testkit::pb::{CheckRequest, Header, IssueRequest};
use tonic::{Code, Request};

fn check(token: Option<&str>) -> Request<CheckRequest> {
    let mut req = Request::new(CheckRequest {
        method: "/synapsor.test.v1.Echo/Unary".into(),
        principal: "spiffe://test/client".into(),
        headers: vec![Header {
            name: "x-tenant".into(),
            value: "acme".into(),
        }],
    });
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().unwrap();
        req.metadata_mut().insert("authorization", value);
    }
    req
}

#[tokio::test]
async fn check_follows_the_policy() {
    let server = AuthzServer::start(AuthzOptions::default());
    let mut client = authz_client(server.addr()).await;

    let ok = client.check(check(Some("allow-ada"))).await.unwrap();
    let h = &ok.get_ref().headers;
    assert_eq!(
        (h[0].name.as_str(), h[0].value.as_str()),
        ("x-authz-user", "allow-ada")
    );

    let denied = client.check(check(Some("deny-bob"))).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "token deny-bob may not call /synapsor.test.v1.Echo/Unary"
    );

    let anon = client.check(check(None)).await.unwrap_err();
    assert_eq!(
        (anon.code(), anon.message()),
        (Code::Unauthenticated, "no credentials")
    );

    // A forwarded credential in the CheckRequest wins over the call's own metadata.
    let mut fwd = check(Some("allow-ada"));
    fwd.get_mut().headers.push(Header {
        name: "authorization".into(),
        value: "Bearer deny-eve".into(),
    });
    let denied = client.check(fwd).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    assert_eq!(server.checks(), 4);
    let last = server.last_check().unwrap();
    assert_eq!(last.principal, "spiffe://test/client");
    assert_eq!(last.headers[0].value, "acme");
}

#[tokio::test]
async fn slow_tokens_wait_then_pass() {
    let server = AuthzServer::start(AuthzOptions {
        slow_delay: Duration::from_millis(300),
        ..AuthzOptions::default()
    });
    let mut client = authz_client(server.addr()).await;
    let start = Instant::now();
    client.check(check(Some("slow-1"))).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));

    // A call whose deadline passes first ends with it, and is not counted.
    let mut req = check(Some("slow-2"));
    req.set_timeout(Duration::from_millis(50));
    let late = client.check(req).await.unwrap_err();
    assert!(
        matches!(late.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{late:?}"
    );
    assert_eq!(server.checks(), 1);
}

#[tokio::test]
async fn tokens_are_numbered_with_the_configured_lifetime() {
    let server = AuthzServer::start(AuthzOptions {
        token_lifetime: Duration::from_millis(1500),
        ..AuthzOptions::default()
    });
    let mut client = tokens_client(server.addr()).await;
    let issue = |aud: &str| {
        Request::new(IssueRequest {
            audience: aud.into(),
        })
    };
    let first = client.issue(issue("billing")).await.unwrap().into_inner();
    assert_eq!((first.token.as_str(), first.expires_in_ms), ("tok-1", 1500));
    server.set_token_lifetime(Duration::from_secs(2));
    let second = client.issue(issue("search")).await.unwrap().into_inner();
    assert_eq!(
        (second.token.as_str(), second.expires_in_ms),
        ("tok-2", 2000)
    );
    assert_eq!(server.issues(), 2);
    assert_eq!(server.last_audience().as_deref(), Some("search"));
    server.stop().await;
}
