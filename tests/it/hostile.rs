//! Hostile clients against the real `synapsor` binary (so its memory is measured alone, from
//! `/proc`): the 2023 "rapid reset" pattern, SETTINGS and PING floods from a client that never
//! reads, oversized headers, and slow readers of large streams. Each time the gateway stays up,
//! its memory stays bounded, and a well-behaved client on another connection keeps being
//! served. Also 10,000 idle streams held open at once (the memory per stream is printed;
//! docs/RESILIENCE.md records it).

use crate::support;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{free_port, http_get, rss_kib, run_binary, terminate};
use synapsor_testkit::{Backend, EchoRequest};
use tokio::io::AsyncWriteExt;

struct Gw {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway with one worker, so every stream to the backend shares that worker's pool.
async fn start(tag: &str, backend: SocketAddr, listener_extra: &str) -> Gw {
    let (listen, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("synapsor-hostile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("run.yaml");
    std::fs::write(
        &cfg,
        format!(
            "admin: {{ listen: {admin} }}\nruntime: {{ workers: 1 }}\nreload: {{ watch: false }}\nlisteners:\n  - {{ name: l, listen: {listen}, upstream: u{listener_extra} }}\nupstreams:\n  - {{ name: u, endpoints: [ \"{backend}\" ] }}\n"
        ),
    )
    .unwrap();
    let child = run_binary(&cfg, admin).await;
    Gw {
        child,
        listen,
        admin,
        dir,
    }
}

/// A well-behaved client making calls until `stop`; returns (ok, failed).
fn bystander(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let mut c = synapsor_testkit::client(addr).await;
        let (mut ok, mut failed) = (0, 0);
        let t = Instant::now();
        while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) {
            match tokio::time::timeout(Duration::from_secs(5), c.unary(EchoRequest::default()))
                .await
            {
                Ok(Ok(_)) => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    })
}

async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn grpc_request(addr: SocketAddr, method: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}/synapsor.test.v1.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Opens streams and resets them, `batch` at a time: at once, or (`answered`) once the gateway
/// has answered each with its response headers. Returns how many streams were opened before
/// the gateway refused more; bounded at 20,000 streams or 20 s.
async fn reset_flood(addr: SocketAddr, batch: usize, answered: bool) -> u32 {
    let mut send = raw_h2(addr).await;
    let (mut opened, t) = (0u32, Instant::now());
    'flood: while opened < 20_000 && t.elapsed() < Duration::from_secs(20) {
        let mut open = Vec::with_capacity(batch);
        for _ in 0..batch {
            if std::future::poll_fn(|cx| send.poll_ready(cx))
                .await
                .is_err()
            {
                break 'flood;
            }
            match send.send_request(grpc_request(addr, "Bidi"), false) {
                Ok(pair) => open.push(pair),
                Err(_) => break 'flood,
            }
            opened += 1;
        }
        let mut gone = false;
        for (resp, mut tx) in open {
            if answered {
                match tokio::time::timeout(Duration::from_secs(5), resp).await {
                    Ok(Ok(_)) => {}
                    _ => gone = true,
                }
            }
            tx.send_reset(h2::Reason::CANCEL);
        }
        if gone {
            break;
        }
        tokio::task::yield_now().await;
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_floods_are_cut_off_and_others_are_served() {
    let b = Backend::start("b").await;
    let gw = start("reset", b.addr, "").await;
    let before = rss_kib(gw.child.id());
    let stop = Arc::new(AtomicBool::new(false));
    let good = bystander(gw.listen, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Reset at once: h2 refuses a connection with too many streams reset before it took them.
    let at_once = reset_flood(gw.listen, 1, false).await;
    // Reset once answered (the upstream call is open): the gateway's own rule (at least 500
    // streams reset within a second, half of the connection's) sends GOAWAY.
    let taken = reset_flood(gw.listen, 50, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(gw.child.id());
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = good.await.unwrap();
    eprintln!("rapid reset: cut off after {at_once} (at once) and {taken} (after accept) streams; RSS {before} -> {after} KiB; bystander {ok} ok, {failed} failed");
    // Streams reset before the gateway takes them are dropped inside h2 (they cost nothing
    // upstream) and only h2's pending-accept limit sees them, so how many get through before
    // a cut-off is timing: from a few hundred to about 12,000 in release runs (the old bound
    // of 5,000 failed there before this was changed, too). It must not run to the flood's
    // own bound.
    assert!(at_once < 20_000, "never cut off: {at_once}");
    assert!(
        (500..5_000).contains(&taken),
        "cut off by the reset rule: {taken}"
    );
    // The backend's own HTTP/2 stack (hyper/h2) allows 20 streams reset before it accepted
    // them and answers more with GOAWAY ENHANCE_YOUR_CALM on the upstream connection, which
    // cost the bystander its call in flight there. Streams the flooder resets a moment after
    // the gateway opened them upstream were such streams until the gateway held them until the
    // backend answered (src/proxy/hold.rs): before that the bystander lost a call in 4 runs
    // of 6, and the binary of then fails the connection assertion below in 2 runs of 4.
    assert_eq!(
        b.observed.connections(),
        1,
        "the upstream connection was closed"
    );
    assert_eq!(failed, 0, "bystander failures");
    assert!(ok > 20, "the bystander was served throughout: {ok}");
    assert!(after < before + 32 * 1024, "RSS {before} -> {after} KiB");
    wait_idle(&b).await;
    // Every held stream was let go.
    let (_, metrics) = http_get(gw.admin, "/metrics").await;
    assert!(
        metrics.contains("\nsynapsor_upstream_streams_held 0\n"),
        "held streams left: {}",
        metrics
            .lines()
            .find(|l| l.starts_with("synapsor_upstream_streams_held"))
            .unwrap_or("none")
    );
}

async fn wait_idle(b: &Backend) {
    support::wait_until(10, "no stream left open at the backend", || {
        b.observed.in_flight() == 0
    })
    .await;
}

/// Writes `frame` `n` times to a raw connection that never reads; stops when the gateway
/// stops reading (5 s without progress) or closes. Returns the frames written.
async fn flood(addr: SocketAddr, frame: &[u8], n: usize) -> usize {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let batch: Vec<u8> = frame.repeat(1000);
    let mut written = 0;
    while written < n {
        match tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&batch)).await {
            Ok(Ok(())) => written += 1000,
            _ => break,
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_from_a_client_that_never_reads_stay_bounded() {
    let b = Backend::start("b").await;
    let gw = start("flood", b.addr, "").await;
    let before = rss_kib(gw.child.id());
    let stop = Arc::new(AtomicBool::new(false));
    let good = bystander(gw.listen, stop.clone());
    // An empty SETTINGS frame and a PING, each 500,000 times (9 and 17 bytes).
    let settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08".to_vec();
    let (s, p) = tokio::join!(
        flood(gw.listen, &settings, 500_000),
        flood(gw.listen, &ping, 500_000)
    );
    let after = rss_kib(gw.child.id());
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = good.await.unwrap();
    eprintln!("floods: {s} SETTINGS and {p} PING frames written; RSS {before} -> {after} KiB; bystander {ok} ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 0);
    assert!(after < before + 32 * 1024, "RSS {before} -> {after} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_fail_that_call_only() {
    let b = Backend::start("b").await;
    let gw = start("headers", b.addr, ", max_header_list_size: 16384").await;
    let mut c = synapsor_testkit::client(gw.listen).await;
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut()
        .insert("x-big", "a".repeat(64 * 1024).parse().unwrap());
    let st = c.unary(req).await.unwrap_err();
    assert_ne!(st.code(), tonic::Code::Ok);
    // The same connection still serves ordinary calls, and so does a new one.
    c.unary(EchoRequest::default())
        .await
        .expect("same connection");
    let mut c2 = synapsor_testkit::client(gw.listen).await;
    c2.unary(EchoRequest::default())
        .await
        .expect("new connection");
    assert_eq!(
        b.observed.calls(),
        2,
        "the oversized call never reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_large_streams_hold_bounded_memory() {
    let b = Backend::start("b").await;
    let gw = start("slow", b.addr, "").await;
    // One upstream connection carries all of them (the backend sets no stream limit).
    let before = rss_kib(gw.child.id());
    // 16 clients each ask for 2,000 × 64 KiB (125 MiB) and read one message.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut c = synapsor_testkit::client(gw.listen).await;
        let mut s = c
            .server_stream(EchoRequest {
                reply_count: 2000,
                reply_size: 64 * 1024,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Bounded: a stalled upstream connection would hang here.
        tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("each slow reader gets its first message")
            .unwrap()
            .unwrap();
        held.push((c, s));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(gw.child.id());
    eprintln!("16 slow readers of 125 MiB streams: RSS {before} -> {after} KiB");
    assert!(after < before + 48 * 1024, "RSS {before} -> {after} KiB");
    let mut c = synapsor_testkit::client(gw.listen).await;
    // It shares the upstream connection with the 16 stalled streams (one worker, one pool).
    tokio::time::timeout(Duration::from_secs(10), c.unary(EchoRequest::default()))
        .await
        .expect("others are not stalled behind the slow readers")
        .expect("others are served");
    drop(held);
    wait_idle(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_streams() {
    let b = Backend::start("b").await;
    let gw = start("idle", b.addr, "").await;
    let before = rss_kib(gw.child.id());
    let opened = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    for _ in 0..10 {
        let mut send = raw_h2(gw.listen).await;
        let mut streams = Vec::new();
        for _ in 0..1000 {
            std::future::poll_fn(|cx| send.poll_ready(cx))
                .await
                .unwrap();
            let (resp, tx) = send
                .send_request(grpc_request(gw.listen, "Bidi"), false)
                .unwrap();
            streams.push((resp, tx));
            opened.fetch_add(1, Ordering::Relaxed);
        }
        conns.push((send, streams));
    }
    support::wait_until(60, "10,000 streams open at the backend", || {
        b.observed.in_flight() == 10_000
    })
    .await;
    let after = rss_kib(gw.child.id());
    let per_stream = (after.saturating_sub(before) * 1024) / 10_000;
    eprintln!("10,000 idle streams: RSS {before} -> {after} KiB, {per_stream} bytes per stream");
    assert!(per_stream < 64 * 1024, "{per_stream} bytes per stream");
    let mut c = synapsor_testkit::client(gw.listen).await;
    c.unary(EchoRequest::default())
        .await
        .expect("still serving");
    drop(conns);
    wait_idle(&b).await;
    terminate_gw(gw);
}

fn terminate_gw(mut gw: Gw) {
    let child = std::mem::replace(
        &mut gw.child,
        std::process::Command::new("true").spawn().unwrap(),
    );
    terminate(child);
}
