//! The per-endpoint pool against real backends: expansion past a low MAX_CONCURRENT_STREAMS,
//! strict queueing versus loose overflow, idle and max-lifetime recycling, keepalive on quiet
//! streams, and a connection per call with `reuse: false`.

use crate::support;

use std::time::{Duration, Instant};

use support::{config, gateway, single_worker, wait_until};
use synapsor_testkit::{Backend, BackendOptions, EchoReply, EchoRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

async fn limited_backend(max_streams: u32) -> Backend {
    Backend::start_with(
        "b",
        BackendOptions {
            max_concurrent_streams: Some(max_streams),
            ..Default::default()
        },
    )
    .await
}

/// Opens a long server stream and waits for its first message (so it is really open).
async fn hold(
    c: &mut synapsor_testkit::EchoClient<tonic::transport::Channel>,
) -> Streaming<EchoReply> {
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 100_000,
            delay_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    s.next().await.unwrap().unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_expands_past_the_peers_stream_limit() {
    let b = limited_backend(2).await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { min_connections: 1, max_connections: 8 }\n",
    )))
    .await;
    let mut c = gw.client().await;
    let mut held = Vec::new();
    for _ in 0..6 {
        // Each stream gets its first message: none waits behind the peer's limit of 2.
        held.push(
            tokio::time::timeout(Duration::from_secs(10), hold(&mut c))
                .await
                .expect("not queued"),
        );
    }
    assert_eq!(b.observed.in_flight(), 6);
    assert!(
        gw.open_connections("u", 0) >= 3,
        "{} connections",
        gw.open_connections("u", 0)
    );
    assert!(b.observed.connections() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_pool_queues_then_answers_resource_exhausted() {
    let b = limited_backend(1).await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { mode: strict, min_connections: 1, max_connections: 1, queue_timeout: 300ms }\n",
    )))
    .await;
    let mut c = gw.client().await;
    let s = hold(&mut c).await;
    let started = Instant::now();
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("upstream u"), "{st:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "waited in the queue first"
    );
    assert_eq!(
        b.observed.connections(),
        1,
        "strict never opens past the maximum"
    );
    // A queued call gets the slot as soon as it frees.
    let mut c2 = c.clone();
    let queued = tokio::spawn(async move {
        c2.unary(EchoRequest {
            payload: b"q".to_vec(),
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    let r = queued.await.unwrap().expect("served once the slot freed");
    assert_eq!(r.get_ref().payload, b"q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_pool_overflows_then_closes_the_extra_connection() {
    let b = limited_backend(1).await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { mode: loose, min_connections: 1, max_connections: 1, idle_timeout: 200ms }\n",
    )))
    .await;
    let mut c = gw.client().await;
    let s = hold(&mut c).await;
    let r = c
        .unary(EchoRequest::default())
        .await
        .expect("loose opens an extra connection");
    assert_eq!(r.get_ref().backend, "b");
    assert_eq!(b.observed.connections(), 2);
    wait_until(10, "the idle overflow connection to close", || {
        gw.open_connections("u", 0) == 1
    })
    .await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_above_the_minimum_close() {
    let b = limited_backend(1).await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { min_connections: 1, max_connections: 4, idle_timeout: 300ms }\n",
    )))
    .await;
    let mut c = gw.client().await;
    let held = vec![hold(&mut c).await, hold(&mut c).await, hold(&mut c).await];
    assert_eq!(gw.open_connections("u", 0), 3);
    drop(held);
    wait_until(10, "idle connections to close down to the minimum", || {
        gw.open_connections("u", 0) == 1
    })
    .await;
    // It stays at the minimum, and still serves.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(gw.open_connections("u", 0), 1);
    c.unary(EchoRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_retires_connections_without_cutting_streams() {
    let b = Backend::start("b").await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { min_connections: 1, max_connections: 2, max_lifetime: 300ms }\n",
    )))
    .await;
    let up = gw.running.upstream("u").unwrap();
    let first = up.members().endpoints[0].pool.connection_ids();
    let mut c = gw.client().await;
    // A 1.5 s stream outlives its connection's lifetime and still finishes cleanly.
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 15,
            delay_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.next().await {
        m.expect("a retired connection lets its streams finish");
        n += 1;
    }
    assert_eq!(n, 15);
    wait_until(10, "only fresh connections in the pool", || {
        let now = up.members().endpoints[0].pool.connection_ids();
        !now.is_empty() && now.iter().all(|id| !first.contains(id))
    })
    .await;
    assert!(
        b.observed.connections() >= 3,
        "{} connections",
        b.observed.connections()
    );
    c.unary(EchoRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_stream_survives_many_keepalive_periods() {
    let b = Backend::start("b").await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { keepalive_time: 100ms, keepalive_timeout: 500ms }\n",
    )))
    .await;
    let up = gw.running.upstream("u").unwrap();
    let ids = up.members().endpoints[0].pool.connection_ids();
    let mut c = gw.client().await;
    // Three messages 800 ms apart: the stream is silent for eight PING periods at a time.
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 3,
            delay_ms: 800,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.next().await {
        m.expect("quiet stream kept alive");
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(
        up.members().endpoints[0].pool.connection_ids(),
        ids,
        "the same connection throughout"
    );
    assert_eq!(b.observed.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_false_gives_every_call_its_own_connection() {
    let b = Backend::start("b").await;
    let gw = gateway(&single_worker(&config(
        &[b.addr.to_string()],
        "    pool: { reuse: false, min_connections: 0 }\n",
    )))
    .await;
    let mut c = gw.client().await;
    for _ in 0..5 {
        c.unary(EchoRequest::default()).await.unwrap();
    }
    assert_eq!(b.observed.connections(), 5);
}
