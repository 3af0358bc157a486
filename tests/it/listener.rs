//! Listener behaviour: routing by port, path prefix and metadata; UNIMPLEMENTED without a route;
//! non-gRPC requests and garbage rejected while other streams carry on; client PINGs answered;
//! graceful drain; the admin endpoints.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{gateway, http_get};
use synapsor_testkit::{Backend, EchoRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn two_listener_config(a: &Backend, b: &Backend) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: main
    listen: 127.0.0.1:0
    upstream: ua
    routes:
      - {{ path_prefix: /synapsor.test.v1.Echo/ServerStream, upstream: ub }}
      - {{ metadata: {{ name: x-tenant, value: gold }}, upstream: ub }}
  - name: second
    listen: 127.0.0.1:0
    upstream: ub
  - name: routes-only
    listen: 127.0.0.1:0
    routes: [ {{ path_prefix: /other.Service/, upstream: ua }} ]
upstreams:
  - {{ name: ua, endpoints: [ \"{}\" ] }}
  - {{ name: ub, endpoints: [ \"{}\" ] }}
",
        a.addr, b.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_port_path_prefix_and_metadata() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = gateway(&two_listener_config(&a, &b)).await;
    let mut main = gw.client().await;
    let mut second = synapsor_testkit::client(gw.listeners[1].1).await;
    let backend = |r: tonic::Response<synapsor_testkit::EchoReply>| r.into_inner().backend;
    assert_eq!(
        backend(main.unary(EchoRequest::default()).await.unwrap()),
        "a"
    );
    assert_eq!(
        backend(second.unary(EchoRequest::default()).await.unwrap()),
        "b",
        "by port"
    );
    let mut s = main
        .server_stream(EchoRequest {
            reply_count: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.next().await.unwrap().unwrap().backend,
        "b",
        "by path prefix"
    );
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut().insert("x-tenant", "gold".parse().unwrap());
    assert_eq!(backend(main.unary(r).await.unwrap()), "b", "by metadata");
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-tenant", "silver".parse().unwrap());
    assert_eq!(
        backend(main.unary(r).await.unwrap()),
        "a",
        "other values fall through"
    );
    // No route and no default: UNIMPLEMENTED.
    let mut none = synapsor_testkit::client(gw.listeners[2].1).await;
    let st = none.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unimplemented);
    assert!(
        st.message().contains("/synapsor.test.v1.Echo/Unary"),
        "{st:?}"
    );
}

/// A raw h2 connection to the gateway.
async fn raw_h2(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    send.ready().await.unwrap()
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut f = vec![0, 0, 0, 0, msg.len() as u8];
    f.extend_from_slice(msg);
    f.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_grpc_requests_are_rejected_while_other_streams_carry_on() {
    let b = Backend::start("b").await;
    let gw = gateway(&support::config(&[b.addr.to_string()], "")).await;
    let mut send = raw_h2(gw.addr).await;
    // A gRPC server stream on this connection: 50 replies, 20 ms apart.
    let req = http::Request::post(format!(
        "http://{}/synapsor.test.v1.Echo/ServerStream",
        gw.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (resp, mut tx) = send.send_request(req, false).unwrap();
    tx.send_data(grpc_frame(&[0x10, 50, 0x20, 20]), true)
        .unwrap();
    let mut body = resp.await.unwrap().into_body();
    body.data().await.unwrap().unwrap();
    // Now junk on the same connection.
    let get = http::Request::get(format!("http://{}/", gw.addr))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(get, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 405);
    let json = http::Request::post(format!("http://{}/x", gw.addr))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (resp, mut tx2) = send.send_request(json, false).unwrap();
    let _ = tx2.send_data(Bytes::from_static(b"{}"), true);
    assert_eq!(resp.await.unwrap().status(), 415);
    // The gRPC stream is unharmed: it runs to its end with status 0.
    let mut bytes = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert!(bytes > 0);
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_that_connection_only() {
    let b = Backend::start("b").await;
    let cfg = support::config(&[b.addr.to_string()], "").replace(
        "drain_timeout: 5s",
        "drain_timeout: 5s, keepalive_time: 300ms, keepalive_timeout: 300ms",
    );
    let gw = gateway(&cfg).await;
    let mut c = gw.client().await;
    let mut s = c
        .server_stream(EchoRequest {
            reply_count: 40,
            delay_ms: 25,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for junk in [
        &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        &[0xff; 4096][..],
        // The preface, then CONTINUATION without HEADERS: a protocol error.
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\x00\x00\x00\x00\x01abcd"[..],
        // The preface, then half a frame that never completes: the keepalive PING catches it.
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\xff\xff"[..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let _ = tcp.write_all(junk).await;
        let mut buf = [0u8; 1024];
        let t = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => assert!(t.elapsed() < Duration::from_secs(15)),
                Err(_) => panic!("the gateway kept a garbage connection open"),
            }
        }
    }
    let mut n = 0;
    while let Some(m) = s.next().await {
        m.expect("the other client's stream carries on");
        n += 1;
    }
    assert_eq!(n, 40);
    c.unary(EchoRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_are_answered_and_many_streams_multiplex() {
    let b = Backend::start("b").await;
    let gw = gateway(&support::config(&[b.addr.to_string()], "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (_send, mut conn): (h2::client::SendRequest<Bytes>, _) =
        h2::client::handshake(tcp).await.unwrap();
    let mut ping = conn.ping_pong().unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(5), ping.ping(h2::Ping::opaque()))
            .await
            .expect("PING answered")
            .unwrap();
    }
    let c = gw.client().await;
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.unary(EchoRequest {
                    payload: vec![i as u8; 64],
                    delay_ms: 50,
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for call in calls {
        call.await
            .unwrap()
            .expect("every multiplexed call succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_lets_calls_in_flight_finish() {
    let b = Backend::start("b").await;
    let gw = gateway(&support::config(&[b.addr.to_string()], "")).await;
    let addr = gw.addr;
    let mut c = gw.client().await;
    let call = tokio::spawn(async move {
        c.unary(EchoRequest {
            delay_ms: 800,
            payload: b"slow".to_vec(),
            ..Default::default()
        })
        .await
    });
    support::wait_until(10, "the call to reach the backend", || {
        b.observed.in_flight() == 1
    })
    .await;
    let started = Instant::now();
    let drained = gw.running.shutdown().await;
    assert!(drained, "drained within drain_timeout");
    let r = call.await.unwrap().expect("the call in flight finished");
    assert_eq!(r.get_ref().payload, b"slow");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "shutdown waited for it"
    );
    // No new connections are accepted.
    let refused =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .unwrap();
    assert!(refused.is_err(), "listener closed after drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_health_readiness_and_config() {
    let b = Backend::start("b").await;
    let gw = gateway(&support::config(&[b.addr.to_string()], "")).await;
    let admin = gw.admin.unwrap();
    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let (status, body) = http_get(admin, "/config").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("name: u") && body.contains(&b.addr.to_string()),
        "{body}"
    );
    assert_eq!(http_get(admin, "/nope").await.0, 404);
    // An upstream with nothing reachable is not ready.
    let dead = support::free_port();
    let gw2 = gateway(&support::config(&[dead.to_string()], "")).await;
    let (status, body) = http_get(gw2.admin.unwrap(), "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("u"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let b = Backend::start("b").await;
    let cfg = support::config(&[b.addr.to_string()], "")
        .replace("drain_timeout: 5s", "drain_timeout: 5s, max_connections: 2");
    let gw = gateway(&cfg).await;
    let first = raw_h2(gw.addr).await;
    let second = raw_h2(gw.addr).await;
    support::wait_until(10, "two connections", || gw.running.open_connections() == 2).await;
    // The third connects at TCP level (the backlog) but is not served while two are open.
    let third = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let get = http::Request::get(format!("http://{}/", gw.addr))
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(get, true).unwrap();
        (resp.await.unwrap().status(), gw)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "served past max_connections");
    drop(first);
    let (status, gw) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(status, 405);
    assert!(gw.running.open_connections() <= 2);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_connections_get_goaway_and_finish_their_calls() {
    let b = Backend::start("b").await;
    let yaml = support::config(&[b.addr.to_string()], "").replace(
        "drain_timeout: 5s }",
        "drain_timeout: 5s, max_connection_age: 300ms, max_connection_age_grace: 10s }",
    );
    let gw = gateway(&yaml).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post(format!("http://{}/synapsor.test.v1.Echo/Unary", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut tx) = send.send_request(req, false).unwrap();
    // delay_ms: 800 — the call outlives the connection's 300 ms age.
    tx.send_data(grpc_frame(&[0x20, 0xA0, 0x06]), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0", "the call in flight finished");
    // The gateway sent GOAWAY: with its call done, the connection ends by itself (without aging
    // it would stay open, answering PINGs, for as long as the client likes).
    tokio::time::timeout(Duration::from_secs(10), conn_task)
        .await
        .expect("the aged connection was closed")
        .unwrap()
        .expect("closed gracefully, not reset");
    // New connections are served as before.
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
}
