//! Failures around the gateway: refused connections, an endpoint down at start that comes up,
//! and an endpoint killed under load (only its in-flight calls fail; others are retried).

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{config, free_port, gateway};
use synapsor_testkit::{Backend, BackendOptions, EchoRequest};
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_unavailable_naming_the_upstream() {
    let dead = free_port();
    let gw = gateway(&config(
        &[dead.to_string()],
        "    pool: { dial_timeout: 1s }\n",
    ))
    .await;
    let mut c = gw.client().await;
    let started = Instant::now();
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(st.message().contains("upstream u"), "{st:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within dial_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_at_start_joins_when_it_comes_up() {
    let addr = free_port();
    let gw = gateway(&config(
        &[addr.to_string()],
        "    pool: { dial_timeout: 1s, backoff_max_delay: 200ms }\n",
    ))
    .await;
    assert!(
        gw.running.readiness().is_err(),
        "not ready without an endpoint"
    );
    let mut c = gw.client().await;
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unavailable);
    let _b = Backend::start_with(
        "late",
        BackendOptions {
            addr: Some(addr),
            ..Default::default()
        },
    )
    .await;
    let t = Instant::now();
    loop {
        if let Ok(r) = c.unary(EchoRequest::default()).await {
            assert_eq!(r.get_ref().backend, "late");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "endpoint never joined"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::wait_until(10, "readiness", || gw.running.readiness().is_ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_endpoint_fails_only_its_in_flight_calls() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = gateway(&config(
        &[a.addr.to_string(), b.addr.to_string()],
        "    balance: round_robin\n    pool: { dial_timeout: 1s, backoff_max_delay: 5s }\n",
    ))
    .await;
    let c = gw.client().await;
    // Long streams: half land on a and are in flight when it dies.
    let mut long = Vec::new();
    for _ in 0..4 {
        let mut s = c
            .clone()
            .server_stream(EchoRequest {
                reply_count: 100_000,
                delay_ms: 20,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first = s.next().await.unwrap().unwrap();
        long.push((first.backend, s));
    }
    // Unary load from 8 workers, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let mut c = c.clone();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.unary(EchoRequest::default()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(st) => {
                        codes.push((st.code(), st.message().to_string()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            codes
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().await;
    let killed_at = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut codes = Vec::new();
    for w in workers {
        codes.extend(w.await.unwrap());
    }
    eprintln!(
        "unary ok {} failed {}",
        ok.load(Ordering::Relaxed),
        codes.len()
    );
    // At most the calls in flight on a at the kill can fail (8 workers, one call each).
    assert!(
        codes.len() <= 8,
        "{} unary calls failed: {codes:?}",
        codes.len()
    );
    assert!(codes.iter().all(|c| c.0 == Code::Unavailable), "{codes:?}");
    assert!(
        ok.load(Ordering::Relaxed) > killed_at + 50,
        "calls went on after the kill"
    );
    // The long streams on a ended with UNAVAILABLE; those on b are untouched.
    for (backend, mut s) in long {
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.next().await {
                    Some(Ok(_)) if backend == "b" => return Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(st)) => return Err(st),
                    None => panic!("stream ended without a status"),
                }
            }
        })
        .await
        .unwrap();
        match backend.as_str() {
            "a" => assert_eq!(next.unwrap_err().code(), Code::Unavailable),
            _ => next.expect("b's stream carries on"),
        }
    }
    // New calls all go to b.
    let mut c = c.clone();
    for _ in 0..20 {
        assert_eq!(
            c.unary(EchoRequest::default())
                .await
                .unwrap()
                .get_ref()
                .backend,
            "b"
        );
    }
}
