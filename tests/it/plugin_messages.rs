//! Message hooks (contract 0.2) with real components over real sockets: every message of the
//! four call kinds through `msg_probe` (order and boundaries checked message by message),
//! replacements larger than the original, gzip, rejections mid-stream in both directions,
//! `max_message_size` both ways, call properties, and plugin-defined metrics with their bound.
//!
//! `msg_probe` (plugins/testing/msg-probe) replaces payload `P` (field 1 of `EchoRequest` and
//! `EchoReply`) of message `i` by `req<i>:P` or `resp<i>:P`, refuses a message whose payload is
//! `reject-me`, passes `keep`, and answers `props` with what `properties` says.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{first_metadata as one, gateway, http_get, staged_config as cfg, wasm_stage as wasm};
use synapsor_testkit::{Backend, EchoRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request};

fn msg(payload: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: payload.to_vec(),
        ..Default::default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn probed(extra: &str) -> (Backend, support::TestGateway) {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b.addr.to_string(), &wasm("mp", "msg_probe", extra))).await;
    (b, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_the_four_call_kinds_goes_through_the_hooks_in_order() {
    let (_b, gw) = probed("").await;
    let mut c = gw.client().await;
    // Unary: one message each way; the replacements are larger than the originals.
    let r = c.unary(msg(b"hello")).await.unwrap().into_inner();
    assert_eq!(text(&r.payload), "resp0:req0:hello");

    // Client streaming: five request messages, one of 200 KiB (more than three DATA frames).
    let big = vec![b'x'; 200 << 10];
    let sent: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        big.clone(),
        b"".to_vec(),
        b"ccc".to_vec(),
        b"d".to_vec(),
    ];
    let stream = tokio_stream::iter(sent.clone().into_iter().map(|p| msg(&p)));
    let r = c.client_stream(stream).await.unwrap().into_inner();
    assert_eq!(r.messages_received, 5, "boundaries kept");
    let tagged: usize = sent
        .iter()
        .enumerate()
        .map(|(i, p)| format!("req{i}:").len() + p.len())
        .sum();
    assert_eq!(r.bytes_received as usize, tagged);
    assert_eq!(
        text(&r.payload),
        "resp0:",
        "the reply's empty payload, tagged"
    );

    // Server streaming: one request, five replies, each tagged with its own index.
    let r = EchoRequest {
        payload: b"s".to_vec(),
        reply_count: 5,
        ..Default::default()
    };
    let mut replies = c.server_stream(r).await.unwrap().into_inner();
    for i in 0..5 {
        let m = replies.next().await.unwrap().unwrap();
        assert_eq!(text(&m.payload), format!("resp{i}:req0:s"));
        assert_eq!(m.seq, i as u32, "the rest of the message is kept");
    }
    assert!(replies.next().await.is_none());

    // Bidi ping-pong: each reply comes before the next request is sent.
    let (tx, rx) = mpsc::channel(1);
    let mut replies = c.bidi(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for i in 0..6 {
        let payload = if i == 3 {
            big.clone()
        } else {
            format!("p{i}").into_bytes()
        };
        tx.send(msg(&payload)).await.unwrap();
        let m = replies.next().await.unwrap().unwrap();
        let mut want = format!("resp{i}:req{i}:").into_bytes();
        want.extend_from_slice(&payload);
        assert!(
            m.payload == want,
            "message {i}: {}",
            text(&m.payload[..40.min(m.payload.len())])
        );
    }
    drop(tx);
    assert!(replies.next().await.is_none());
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    for (hook, n) in [
        ("on_request_message", 1 + 5 + 1 + 6),
        ("on_response_message", 1 + 1 + 5 + 6),
    ] {
        let line = format!("synapsor_plugin_calls_total{{plugin=\"mp\",hook=\"{hook}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_messages_are_shown_decompressed_and_compressed_again() {
    let (_b, gw) = probed("").await;
    let mut c = gw
        .client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let payload = vec![b'z'; 4096];
    let r = c.unary(msg(&payload)).await.unwrap().into_inner();
    let mut want = b"respz0:reqz0:".to_vec();
    want.extend_from_slice(&payload);
    assert!(r.payload == want, "{}", text(&r.payload[..20]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_message_refused_mid_stream_ends_the_call_with_its_status() {
    let (b, gw) = probed("").await;
    let mut c = gw.client().await;
    // Bidi: the response has started when message 2 is refused.
    let (tx, rx) = mpsc::channel(1);
    let mut replies = c.bidi(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for i in 0..2 {
        tx.send(msg(b"ok")).await.unwrap();
        let m = replies.next().await.unwrap().unwrap();
        assert_eq!(text(&m.payload), format!("resp{i}:req{i}:ok"));
    }
    tx.send(msg(b"reject-me")).await.unwrap();
    let status = replies.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "rejected message 2");
    assert!(replies.next().await.is_none());
    // The gateway carries on.
    let r = c.unary(msg(b"after")).await.unwrap().into_inner();
    assert_eq!(text(&r.payload), "resp0:req0:after");
    assert_eq!(b.observed.calls(), 2);
}

/// A bare HTTP/2 upstream that reads each request body and, when `answer`, sends response
/// headers and then `first` (a whole gRPC message) but never ends the response; it counts 1 when
/// it takes a stream and 100 when the gateway resets it with CANCEL. (A tonic server cannot be
/// asked: hyper ends a request body reset with CANCEL as if it were complete.)
async fn silent_upstream(answer: bool, first: &'static [u8]) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(serve_silently(tcp, count, answer, first));
        }
    });
    (addr, seen)
}

async fn serve_silently(
    tcp: tokio::net::TcpStream,
    count: Arc<AtomicU64>,
    answer: bool,
    first: &'static [u8],
) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let count = count.clone();
        tokio::spawn(async move {
            count.fetch_add(1, Ordering::SeqCst);
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(d)) = body.data().await {
                    let _ = body.flow_control().release_capacity(d.len());
                }
            });
            let reason = if answer {
                let head = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(head, false).unwrap();
                if !first.is_empty() {
                    let first = bytes::Bytes::from_static(first);
                    send.send_data(first, false).unwrap();
                }
                std::future::poll_fn(|cx| send.poll_reset(cx)).await
            } else {
                std::future::poll_fn(|cx| respond.poll_reset(cx)).await
            };
            if reason.ok() == Some(h2::Reason::CANCEL) {
                count.fetch_add(100, Ordering::SeqCst);
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_message_refused_mid_stream_resets_the_upstream_stream() {
    for answered in [true, false] {
        let (addr, seen) = silent_upstream(answered, b"").await;
        let gw = gateway(&cfg(&addr.to_string(), &wasm("mp", "msg_probe", ""))).await;
        let mut c = gw.client().await;
        let (tx, rx) = mpsc::channel(4);
        tx.send(msg(b"first")).await.unwrap();
        let load = || seen.load(Ordering::SeqCst);
        let status = if answered {
            // Bidi, the response started: the status comes in its trailers.
            let mut replies = c.bidi(ReceiverStream::new(rx)).await.unwrap().into_inner();
            support::wait_until(5, "the upstream takes the call", || load() == 1).await;
            tx.send(msg(b"reject-me")).await.unwrap();
            replies.next().await.unwrap().unwrap_err()
        } else {
            // Client streaming, no response yet: answered trailers-only.
            let call = tokio::spawn(async move { c.client_stream(ReceiverStream::new(rx)).await });
            support::wait_until(5, "the upstream takes the call", || load() == 1).await;
            tx.send(msg(b"reject-me")).await.unwrap();
            let done = tokio::time::timeout(Duration::from_secs(10), call).await;
            done.unwrap().unwrap().unwrap_err()
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.message(), "rejected message 1");
        support::wait_until(5, "the upstream sees its stream reset", || load() == 101).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_message_refused_mid_stream_ends_the_call_with_the_status() {
    // Request messages unseen, so the tonic backend echoes `reject-me` back.
    let (_b, gw) = probed(", config: { request: false }").await;
    let mut c = gw.client().await;
    let (tx, rx) = mpsc::channel(1);
    let mut replies = c.bidi(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(msg(b"fine")).await.unwrap();
    let m = replies.next().await.unwrap().unwrap();
    assert_eq!(text(&m.payload), "resp0:fine");
    tx.send(msg(b"reject-me")).await.unwrap();
    let status = replies.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "rejected message 1");

    // An upstream whose first response message is refused sees its stream reset.
    // The message: field 1 (tag 0x0a), 9 bytes, "reject-me", after the gRPC prefix.
    const REJECT_ME: &[u8] = b"\0\0\0\0\x0b\x0a\x09reject-me";
    let (addr, seen) = silent_upstream(true, REJECT_ME).await;
    let stage = wasm("mp", "msg_probe", ", config: { request: false }");
    let gw = gateway(&cfg(&addr.to_string(), &stage)).await;
    let mut c = gw.client().await;
    let status = c
        .server_stream(msg(b"x"))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await;
    let status = status.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "rejected message 0");
    let load = || seen.load(Ordering::SeqCst);
    support::wait_until(5, "the upstream sees its stream reset", || load() == 101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_size_refuses_or_passes_larger_messages() {
    let big = vec![b'b'; 2048];
    for (policy, refused) in [("reject", true), ("pass", false)] {
        let extra = format!(", max_message_size: 1KiB, on_oversize_message: {policy}");
        let (_b, gw) = probed(&extra).await;
        let mut c = gw.client().await;
        let got = c.unary(msg(&big)).await;
        if refused {
            let status = got.unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("over max_message_size 1KiB"),
                "{}",
                status.message()
            );
        } else {
            // Untouched both ways (the echo is as large); smaller messages are still shown.
            assert!(got.unwrap().into_inner().payload == big, "passed untouched");
            let r = c.unary(msg(b"small")).await.unwrap().into_inner();
            assert_eq!(text(&r.payload), "resp0:req0:small");
            let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
            let line = "synapsor_plugin_messages_unread_total{plugin=\"mp\",reason=\"oversize\"} 2";
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_the_calls_properties() {
    // Request messages unseen, so the backend echoes `props` and the response hook answers it.
    let (b, gw) = probed(", config: { request: false }").await;
    let mut c = gw.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let resp = c.unary(msg(b"props")).await.unwrap();
    assert_eq!(one(&b, "x-prop-listener").as_deref(), Some("l"));
    assert_eq!(one(&b, "x-prop-tls").as_deref(), Some("-"), "no TLS here");
    let start: u64 = one(&b, "x-prop-start").unwrap().parse().unwrap();
    assert!(
        start >= before && start < before + 10_000_000_000,
        "{start} vs {before}"
    );
    // The response side knows the upstream that served the call.
    let md = resp.metadata();
    assert_eq!(md.get("x-prop-group").unwrap(), "u");
    assert_eq!(
        md.get("x-prop-endpoint").unwrap().to_str().unwrap(),
        b.addr.to_string()
    );
    let props = text(&resp.into_inner().payload);
    assert!(
        props.starts_with(&format!(
            "listener=l;group=u;endpoint={};tls=-;identity=-;",
            b.addr
        )),
        "{props}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_metrics_are_exported_with_the_plugins_name_and_bounded() {
    let (_b, gw) = probed("").await;
    let mut c = gw.client().await;
    for _ in 0..3 {
        c.unary(msg(b"m")).await.unwrap();
    }
    let mut r = Request::new(msg(b"m"));
    r.metadata_mut()
        .insert("x-metric-flood", "1200".parse().unwrap());
    c.unary(r).await.unwrap();
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    for line in [
        "# TYPE synapsor_wasm_probe_messages counter",
        "synapsor_wasm_probe_messages_total{plugin=\"mp\",direction=\"request\"} 4",
        "synapsor_wasm_probe_messages_total{plugin=\"mp\",direction=\"response\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // 1,000 series per plugin: the two above, then 998 of the flood; the rest dropped.
    let flood = metrics
        .lines()
        .filter(|l| l.starts_with("synapsor_wasm_flood_total{"))
        .count();
    assert_eq!(flood, 998);
    let dropped = "synapsor_plugin_metric_updates_dropped_total{plugin=\"mp\"} 202";
    assert!(metrics.contains(dropped), "{dropped} in\n{metrics}");
}

/// Sends one message flagged compressed under `grpc-encoding: snappy` (which the gateway does not
/// read) with a bare h2 client; the call's grpc-status and grpc-message.
async fn snappy_call(gw: &support::TestGateway) -> (String, String) {
    snappy_call_to(gw.addr).await
}

async fn snappy_call_to(addr: SocketAddr) -> (String, String) {
    compressed_call(addr, Some("snappy")).await
}

/// One message flagged compressed, under `grpc-encoding: encoding` (none: no such header).
async fn compressed_call(addr: SocketAddr, encoding: Option<&str>) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}/synapsor.test.v1.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    let req = match encoding {
        Some(e) => req.header("grpc-encoding", e),
        None => req,
    };
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    send.send_data(bytes::Bytes::from_static(&[1, 0, 0, 0, 3, 9, 9, 9]), true)
        .unwrap();
    let (parts, mut body) = resp.await.unwrap().into_parts();
    let block = match parts.headers.get("grpc-status") {
        Some(_) => parts.headers,
        None => {
            while let Some(d) = body.data().await {
                d.unwrap();
            }
            body.trailers().await.unwrap().unwrap()
        }
    };
    let field = |n: &str| {
        let v = block
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        percent_encoding::percent_decode_str(&v)
            .decode_utf8_lossy()
            .into_owned()
    };
    (field("grpc-status"), field("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_encoding_is_refused_or_passed_as_configured() {
    // An upstream that never answers, so nothing but the plugin's stage decides (a tonic
    // backend would refuse `snappy` from the headers alone).
    let (addr, _) = silent_upstream(false, b"").await;
    let gw = gateway(&cfg(&addr.to_string(), &wasm("mp", "msg_probe", ""))).await;
    let (code, message) = snappy_call(&gw).await;
    assert_eq!(code, "12", "UNIMPLEMENTED: {message}");
    assert_eq!(
        message,
        "request message 0 is compressed with \"snappy\", which it cannot read (plugin mp)"
    );
    // The compressed flag without any grpc-encoding is a protocol error: INTERNAL, as gRPC
    // servers answer it.
    let (code, message) = compressed_call(gw.addr, None).await;
    assert_eq!(code, "13", "INTERNAL: {message}");
    assert!(message.contains("no grpc-encoding"), "{message}");
    let stage = wasm("mp", "msg_probe", ", on_unknown_encoding: pass");
    let gw = gateway(&cfg(&addr.to_string(), &stage)).await;
    let addr = gw.addr;
    // Passed on untouched: the call goes on (to an upstream that never answers).
    let call = tokio::spawn(async move { snappy_call_to(addr).await });
    let admin = gw.admin.unwrap();
    let line = "synapsor_plugin_messages_unread_total{plugin=\"mp\",reason=\"encoding\"} 1";
    for _ in 0..100 {
        if http_get(admin, "/metrics").await.1.contains(line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(metrics.contains(line), "{line} in\n{metrics}");
    assert!(!call.is_finished(), "the call was not refused");
    call.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_received_messages_are_bounded_by_message_buffer_limit() {
    let (addr, _) = silent_upstream(false, b"").await;
    let extra = ", max_message_size: 512KiB, message_buffer_limit: 1MiB";
    let gw = gateway(&cfg(&addr.to_string(), &wasm("mp", "msg_probe", extra))).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    // Streams that each send 300 KB of a 400 KB message and wait: the fourth goes past 1 MiB.
    let mut open = Vec::new();
    for i in 0..4 {
        let mut client = client.clone().ready().await.unwrap();
        let req = http::Request::post(format!("http://{}/synapsor.test.v1.Echo/Unary", gw.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let mut part = vec![0u8, 0, 6, 0x1a, 0x80]; // flag 0, length 400,000
        part.resize(300_000, 7);
        send.reserve_capacity(part.len());
        send.send_data(bytes::Bytes::from(part), false).unwrap();
        if i < 3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            open.push((resp, send));
            continue;
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap()
            .unwrap();
        let status = resp.headers().get("grpc-status").unwrap();
        assert_eq!(status, "8", "RESOURCE_EXHAUSTED: {:?}", resp.headers());
        let message = resp
            .headers()
            .get("grpc-message")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(message.contains("message buffers are full"), "{message}");
    }
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    let line = "synapsor_plugin_messages_unread_total{plugin=\"mp\",reason=\"buffers_full\"} 1";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
    drop(open);
}
