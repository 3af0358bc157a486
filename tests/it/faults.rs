//! Faults around the gateway, with real backends on 127.0.0.1: a backend that accepts TCP and
//! never answers (request_timeout ends each call, health checks take it out); a backend that
//! answers byte by byte (calls still succeed, intact); a backend that shuts down gracefully
//! (GOAWAY) under load (no call fails); every backend down, then one back (the recovery time is
//! printed; docs/RESILIENCE.md records it). A backend killed under load is in failures.rs and
//! reloads under load in reload.rs.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{config, gateway, wait_until};
use synapsor_testkit::{Backend, BackendOptions, EchoRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections and never reads or writes a byte (kept open until the test ends).
async fn black_hole() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: a few hundred connections at most in these tests.
        while held.len() < 1000 {
            match l.accept().await {
                Ok((tcp, _)) => held.push(tcp),
                Err(_) => return,
            }
        }
    });
    addr
}

/// A TCP relay to `to` that passes requests through at once and answers one byte per write,
/// pausing 1 ms every 8 bytes.
async fn trickle(to: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = TcpStream::connect(to).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut sent = 0u64;
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    for b in &buf[..n] {
                        if cw.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        sent += 1;
                        if sent % 8 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_backend_is_cut_by_request_timeout_and_taken_out_by_health_checks() {
    let good = Backend::start("good").await;
    let hole = black_hole().await;
    let gw = gateway(&config(
        &[hole.to_string(), good.addr.to_string()],
        "    balance: round_robin\n    request_timeout: 300ms\n    pool: { min_connections: 0, dial_timeout: 300ms }\n    health_check: { interval: 200ms, timeout: 150ms, unhealthy_threshold: 2 }\n",
    ))
    .await;
    let mut c = gw.client().await;
    // Before the checks decide, calls that meet the hole end within the timeouts.
    let t = Instant::now();
    for _ in 0..6 {
        let started = Instant::now();
        if let Err(st) = c.unary(EchoRequest::default()).await {
            assert!(
                matches!(
                    st.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
                ),
                "{st:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(5), "a call hung");
    }
    let hole_state = || {
        gw.running.upstream("u").unwrap().members().endpoints[0]
            .health
            .healthy()
    };
    wait_until(10, "the black hole fails its health checks", || {
        !hole_state()
    })
    .await;
    for _ in 0..20 {
        let r = c
            .unary(EchoRequest::default())
            .await
            .expect("only the good one serves");
        assert_eq!(r.into_inner().backend, "good");
    }
    eprintln!("black hole out of rotation {:?} after start", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_by_byte_backend_still_answers_whole_calls() {
    let b = Backend::start("slow").await;
    let relay = trickle(b.addr).await;
    let gw = gateway(&config(&[relay.to_string()], "    request_timeout: 20s\n")).await;
    let mut c = gw.client().await;
    let payload: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..3 {
        let r = c
            .unary(EchoRequest {
                payload: payload.clone(),
                ..Default::default()
            })
            .await
            .expect("a slow answer is still an answer");
        assert_eq!(r.into_inner().payload, payload);
    }
    // A stream of small messages arrives whole, in order.
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 20,
            payload: vec![7; 64],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!(m.payload, vec![7; 64]);
        n += 1;
    }
    assert_eq!(n, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_going_away_gracefully_under_load_fails_no_call() {
    let mut a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = gateway(&config(
        &[a.addr.to_string(), b.addr.to_string()],
        "    balance: round_robin\n",
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..6 {
        let mut c = gw.client().await;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let t = Instant::now();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || t.elapsed() > Duration::from_secs(20) {
                    break;
                }
                // Some calls are slow, so a few are in flight on a when it says GOAWAY.
                let delay_ms = if i == 0 { 200 } else { 0 };
                match c
                    .unary(EchoRequest {
                        delay_ms,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(st) => {
                        eprintln!("failed: {st:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = a.observed.calls();
    a.drain();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(before > 0, "a served before it went away");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} calls, {failed} failed, a served {before} before GOAWAY");
    assert_eq!(failed, 0);
    assert!(ok > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_then_one_back_recovers_within_the_backoff() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let a_addr = a.addr;
    let gw = gateway(&config(
        &[a.addr.to_string(), b.addr.to_string()],
        "    pool: { dial_timeout: 500ms, backoff_max_delay: 1s }\n",
    ))
    .await;
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
    a.kill().await;
    b.kill().await;
    // Everything down: calls fail fast with UNAVAILABLE, none hangs.
    for _ in 0..20 {
        let started = Instant::now();
        let st = c.unary(EchoRequest::default()).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "a call hung");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a comes back on its old port; a call every 10 ms until one succeeds.
    let back = Backend::start_with(
        "a-again",
        BackendOptions {
            addr: Some(a_addr),
            ..Default::default()
        },
    )
    .await;
    let t = Instant::now();
    loop {
        if let Ok(r) = c.unary(EchoRequest::default()).await {
            assert_eq!(r.into_inner().backend, "a-again");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovery = t.elapsed();
    eprintln!("recovery after the first endpoint came back: {recovery:?} (backoff_max_delay 1s)");
    drop(back);
}
