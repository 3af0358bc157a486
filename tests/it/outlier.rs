//! Passive outlier detection against real backends: an endpoint whose calls keep failing with a
//! configured code (or whose streams are reset) is ejected, its ejection grows each time, it
//! comes back (slow-starting) when the time is up, never more than `max_ejection_percent` of a
//! group is out, and the state shows in `/upstreams` and `/metrics`.

use crate::support;

use support::{gateway, http_get, wait_until, TestGateway};
use synapsor_testkit::{Backend, EchoRequest};

fn cfg(endpoints: &[String], outlier: &str) -> String {
    support::config(
        endpoints,
        &format!(
            "    balance: round_robin\n    slow_start: 2s\n    outlier_detection: {outlier}\n"
        ),
    )
}

/// `/upstreams` as JSON: the endpoints of the first group.
async fn endpoints(gw: &TestGateway) -> Vec<serde_json::Value> {
    let (status, body) = http_get(gw.admin.unwrap(), "/upstreams").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["upstreams"][0]["endpoints"].as_array().unwrap().clone()
}

async fn endpoint(gw: &TestGateway, addr: &str) -> serde_json::Value {
    endpoints(gw)
        .await
        .into_iter()
        .find(|e| e["address"] == addr)
        .unwrap()
}

/// Sends `n` calls; returns (answers by backend name, failed calls).
async fn calls(gw: &TestGateway, n: usize) -> (Vec<String>, usize) {
    let mut c = gw.client().await;
    let (mut ok, mut failed) = (Vec::new(), 0);
    for _ in 0..n {
        match c.unary(EchoRequest::default()).await {
            Ok(r) => ok.push(r.into_inner().backend),
            Err(st) => {
                assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
                failed += 1;
            }
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_for_longer_each_time_and_comes_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = gateway(&cfg(
        &[a.addr.to_string(), b.addr.to_string()],
        "{ consecutive_failures: 3, base_ejection_time: 1s, max_ejection_time: 10s, max_ejection_percent: 50 }",
    ))
    .await;
    let b_addr = b.addr.to_string();
    b.observed.set_failing(tonic::Code::Unavailable);
    let (_, failed) = calls(&gw, 30).await;
    assert!(
        failed >= 3,
        "b's calls failed until it was ejected: {failed}"
    );
    let e = endpoint(&gw, &b_addr).await;
    assert_eq!(e["ejected"], true, "{e}");
    assert_eq!(e["in_rotation"], false);
    assert_eq!(e["ejections"], 1);
    let (ok, failed) = calls(&gw, 20).await;
    assert_eq!(failed, 0, "no call goes to the ejected endpoint");
    assert!(ok.iter().all(|n| n == "a"));
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "synapsor_endpoint_ejected{{upstream=\"u\",endpoint=\"{b_addr}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "synapsor_endpoint_ejections_total{{upstream=\"u\",endpoint=\"{b_addr}\"}} 1"
    )));

    // It heals; after the ejection it is back, slow-starting, and takes calls again.
    b.observed.set_failing(tonic::Code::Ok);
    let before = b.observed.calls();
    wait_until(10, "b back in rotation", || {
        let m = gw.running.upstream("u").unwrap().members();
        m.endpoints[1].available()
    })
    .await;
    let e = endpoint(&gw, &b_addr).await;
    assert_eq!(e["ejected"], false);
    assert!(e["slow_start_percent"].as_u64().unwrap() < 100, "{e}");
    // Slow-starting at 10% of its turns at first: call until it takes one (bounded).
    let t = std::time::Instant::now();
    while b.observed.calls() == before {
        let (_, failed) = calls(&gw, 10).await;
        assert_eq!(failed, 0);
        assert!(t.elapsed().as_secs() < 10, "b never takes calls again");
    }

    // Failing again: the second ejection lasts twice as long (2 s). While it slow-starts, b
    // gets few calls, so call until it is out (bounded).
    b.observed.set_failing(tonic::Code::Unavailable);
    let t = std::time::Instant::now();
    let e = loop {
        let _ = calls(&gw, 10).await;
        let e = endpoint(&gw, &b_addr).await;
        if e["ejections"] == 2 {
            break e;
        }
        assert!(t.elapsed().as_secs() < 15, "never ejected again: {e}");
    };
    let left = e["ejected_for_ms"].as_u64().unwrap();
    assert!(
        left > 1000 && left <= 2000,
        "second ejection ~2s: {left} ms left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_ejection_percent_and_only_configured_codes() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let addrs: Vec<String> = bs.iter().map(|b| b.addr.to_string()).collect();
    let gw = gateway(&cfg(
        &addrs,
        "{ consecutive_failures: 2, codes: [INTERNAL, unavailable], max_ejection_percent: 50 }",
    ))
    .await;
    for b in &bs {
        b.observed.set_failing(tonic::Code::Internal);
    }
    let mut c = gw.client().await;
    for _ in 0..30 {
        let st = c.unary(EchoRequest::default()).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Internal, "passed through: {st:?}");
    }
    let ejected = endpoints(&gw)
        .await
        .iter()
        .filter(|e| e["ejected"] == true)
        .count();
    assert_eq!(ejected, 1, "50% of 3 endpoints rounds down to 1");

    // A code not in the list never ejects.
    let gw2 = gateway(&cfg(
        &addrs,
        "{ consecutive_failures: 1, codes: [UNAVAILABLE] }",
    ))
    .await;
    let mut c = gw2.client().await;
    for _ in 0..10 {
        let _ = c.unary(EchoRequest::default()).await.unwrap_err();
    }
    assert!(endpoints(&gw2).await.iter().all(|e| e["ejected"] == false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_between_successes_are_not_consecutive() {
    let a = Backend::start("a").await;
    let gw = gateway(&cfg(
        &[a.addr.to_string()],
        "{ consecutive_failures: 3, max_ejection_percent: 100 }",
    ))
    .await;
    let mut c = gw.client().await;
    // Two failures (trailers-only), then a success (a message, then trailers), ten times over:
    // never three failures in a row.
    for _ in 0..10 {
        for _ in 0..2 {
            let st = c
                .unary(EchoRequest {
                    fail_code: tonic::Code::Unavailable as i32,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(st.code(), tonic::Code::Unavailable);
        }
        c.unary(EchoRequest::default())
            .await
            .expect("a success resets the count");
    }
    let e = endpoint(&gw, &a.addr.to_string()).await;
    assert_eq!(e["ejections"], 0, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_resets_count_as_failures() {
    let a = Backend::start("a").await;
    let (bad, refused) = support::refuser().await;
    let gw = gateway(&cfg(
        &[a.addr.to_string(), bad.to_string()],
        "{ consecutive_failures: 2, max_ejection_percent: 50 }",
    ))
    .await;
    // Streams the refuser resets never started there: they are sent to a and succeed, and
    // each reset counts against the refuser until it is ejected.
    let (ok, failed) = calls(&gw, 20).await;
    assert_eq!((ok.len(), failed), (20, 0));
    let e = endpoint(&gw, &bad.to_string()).await;
    assert_eq!(e["ejected"], true, "{e}");
    let seen = refused.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&seen), "ejected after 2 resets: {seen}");
    let (ok, failed) = calls(&gw, 20).await;
    assert_eq!((ok.len(), failed), (20, 0));
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::SeqCst),
        seen,
        "no call goes to it while ejected"
    );
}

#[test]
fn bad_outlier_settings_name_the_field() {
    let err = synapsor::config::parse(
        &cfg(&["127.0.0.1:1".into()], "{ codes: [NOPE] }"),
        std::path::Path::new("o.yaml"),
    )
    .unwrap_err();
    assert_eq!(err.field, "upstreams[0].outlier_detection.codes[0]");
    assert!(err.to_string().contains("o.yaml:"), "{err}");
    let err = synapsor::config::parse(
        &cfg(&["127.0.0.1:1".into()], "{ max_ejection_percent: 101 }"),
        std::path::Path::new("o.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        err.field,
        "upstreams[0].outlier_detection.max_ejection_percent"
    );
}

/// An upstream that refuses 6 streams of every 10 (a busy server at its stream limit) and
/// answers the others.
async fn often_refusing() -> std::net::SocketAddr {
    let (addr, _) = support::h2_upstream(|mut respond, count| async move {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n % 10 < 6 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            return;
        }
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok(mut body) = respond.send_response(head, false) else {
            return;
        };
        let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let _ = body.send_trailers(trailers);
    })
    .await;
    addr
}

/// Review finding: a call retries a refused stream (up to 32 times), and every refusal counted
/// as an outlier failure, so one call to a busy endpoint ejected it — with one endpoint, every
/// call then failed for 30 s. A refusal now counts once per call, and the call's success resets
/// the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_busy_endpoint_do_not_eject_it() {
    let busy = often_refusing().await;
    let gw = gateway(&support::config(
        &[busy.to_string()],
        "    outlier_detection: { consecutive_failures: 5 }\n",
    ))
    .await;
    let (ok, failed) = calls(&gw, 10).await;
    assert_eq!((ok.len(), failed), (10, 0));
    let e = endpoint(&gw, &busy.to_string()).await;
    assert_eq!(e["ejections"], 0, "{e}");
}
