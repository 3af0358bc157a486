//! Upstreams that misbehave at the HTTP/2 level (built on the h2 crate, on 127.0.0.1): a stream
//! refused before it started is retried elsewhere, replaying its body; GOAWAY `too_many_pings`
//! doubles the keepalive interval.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{config, gateway, wait_until};
use synapsor_testkit::{Backend, EchoRequest};
use tokio::net::TcpListener;

/// An HTTP/2 server that answers the first PING it sees with GOAWAY ENHANCE_YOUR_CALM, as
/// grpc-go does to clients that ping too often ("too_many_pings").
async fn ping_hater() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                // The gateway's handshake PING arrives at once; its first keepalive PING one
                // interval later. Shut down after the interval, as a strict server would.
                let stop = tokio::time::sleep(Duration::from_millis(150));
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        r = conn.accept() => if r.is_none() { return },
                        _ = &mut stop => {
                            conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                            while conn.accept().await.is_some() {}
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_retried_on_another_endpoint() {
    let (bad, refused) = support::refuser().await;
    let good = Backend::start("good").await;
    let gw = gateway(&config(
        &[bad.to_string(), good.addr.to_string()],
        "    balance: round_robin\n",
    ))
    .await;
    let mut c = gw.client().await;
    for i in 0..20u8 {
        let r = c
            .unary(EchoRequest {
                payload: vec![i; 1000],
                ..Default::default()
            })
            .await
            .expect("refused calls are retried");
        assert_eq!(
            r.get_ref().payload,
            vec![i; 1000],
            "the replayed body arrives intact"
        );
    }
    assert!(
        refused.load(Ordering::SeqCst) >= 5,
        "round robin sent some to the refuser"
    );
    // A client stream's messages are replayed too.
    let msgs: Vec<EchoRequest> = (0..10)
        .map(|_| EchoRequest {
            payload: vec![1; 100],
            ..Default::default()
        })
        .collect();
    for _ in 0..4 {
        let r = c
            .client_stream(tokio_stream::iter(msgs.clone()))
            .await
            .unwrap();
        assert_eq!(r.get_ref().messages_received, 10);
        assert_eq!(r.get_ref().bytes_received, 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pings_doubles_the_keepalive_interval() {
    let addr = ping_hater().await;
    let gw = gateway(&config(
        &[addr.to_string()],
        "    pool: { keepalive_time: 100ms, keepalive_timeout: 1s, backoff_max_delay: 100ms }\n",
    ))
    .await;
    let up = gw.running.upstream("u").unwrap();
    assert_eq!(
        up.members().shared.ping_interval(),
        Duration::from_millis(100)
    );
    wait_until(10, "the interval to double", || {
        up.members().shared.ping_interval() >= Duration::from_millis(200)
    })
    .await;
}

/// An HTTP/2 server that completes the handshake, answers the first PING, then stops reading:
/// a peer that is connected but no longer alive.
async fn frozen() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut frozen = Vec::new();
        while let Ok((tcp, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                continue;
            };
            let _ = tokio::time::timeout(Duration::from_millis(50), conn.accept()).await;
            frozen.push(conn); // never polled again
        }
    });
    (addr, accepted)
}

/// Dead-peer detection: a call open on a connection whose peer stopped answering. Nothing
/// arrives for `keepalive_time`, so the pool PINGs; the PING goes unanswered, the connection is
/// dropped (the call fails with UNAVAILABLE, not a hang) and a new one is dialled. An idle
/// connection is never PINGed (stock gRPC servers allow one PING per 2 h without calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keepalive_drops_the_connection_and_redials() {
    let (addr, accepted) = frozen().await;
    let gw = gateway(&support::single_worker(&config(
        &[addr.to_string()],
        "    pool: { keepalive_time: 100ms, keepalive_timeout: 200ms, backoff_max_delay: 100ms }\n",
    )))
    .await;
    wait_until(10, "the first connection", || {
        accepted.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "an idle connection is not PINGed, so not dropped"
    );
    let mut c = gw.client().await;
    let started = std::time::Instant::now();
    let err = c
        .unary(EchoRequest::default())
        .await
        .expect_err("the peer never answers");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_until(10, "the dead connection to be replaced", || {
        accepted.load(Ordering::SeqCst) >= 2
    })
    .await;
}

/// A refused call with nowhere else to go tries the refusing endpoint again, pausing between
/// tries, until `queue_timeout`: then UNAVAILABLE, naming the refusals — bounded, never a hang
/// or a storm of streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_everywhere_fails_after_queue_timeout() {
    let (bad, refused) = support::refuser().await;
    let gw = gateway(&config(
        &[bad.to_string()],
        "    pool: { queue_timeout: 500ms }\n",
    ))
    .await;
    let mut c = gw.client().await;
    let started = std::time::Instant::now();
    let err = c.unary(EchoRequest::default()).await.expect_err("refused");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("refused"), "{}", err.message());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let n = refused.load(Ordering::SeqCst);
    assert!((2..=33).contains(&n), "{n} streams refused");
}

/// An HTTP/1.1-only server (hyper's HTTP/1 server): it answers the HTTP/2 preface with a 400.
async fn http1_only() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Field fault: a call to an endpoint that speaks only HTTP/1.1 got "no healthy endpoint",
/// the cause (the HTTP/2 handshake failed) only in a WARN line. The client's message now says
/// why each endpoint is out of rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_told_why_no_endpoint_is_available() {
    let addr = http1_only().await;
    let gw = gateway(&config(&[addr.to_string()], "")).await;
    let mut c = gw.client().await;
    for _ in 0..3 {
        let err = c.unary(EchoRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        let m = err.message();
        assert!(
            m.contains(&addr.to_string()) && m.contains("HTTP/2 handshake"),
            "the message names the endpoint and the cause: {m}"
        );
    }
}
