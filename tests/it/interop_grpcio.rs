//! Interoperability with a second gRPC stack: Python grpcio (gRPC's C core) as the client,
//! through the gateway, to the tonic echo backend. grpcio comes from PyPI; when it is not
//! importable, the test installs a pinned version into the target directory first.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use support::{config, gateway};
use synapsor_testkit::Backend;

const GRPCIO: &str = "grpcio==1.85.3";

/// A PYTHONPATH under which `import grpc` works (installed once per run: the tests of this
/// module run in parallel threads of one binary).
fn python_path() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(install_grpcio).clone()
}

fn install_grpcio() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pydeps");
    let importable = |path: &PathBuf| {
        Command::new("python3")
            .args(["-c", "import grpc"])
            .env("PYTHONPATH", path)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(&dir) {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg(GRPCIO)
            .status()
            .expect("python3 -m pip");
        assert!(status.success(), "pip install {GRPCIO} failed");
        assert!(
            importable(&dir),
            "grpc is not importable after installing {GRPCIO}"
        );
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_through_the_gateway() {
    let pythonpath = tokio::task::spawn_blocking(python_path).await.unwrap();
    let b = Backend::start("py").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpcio_client.py");
    let addr = gw.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(addr)
            .env("PYTHONPATH", pythonpath)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all passed"),
        "grpcio client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stock Python grpcio server (`tests/python/grpcio_server.py`) on 127.0.0.1, with the channel
/// options a test gives it; stopped when dropped.
struct GrpcioServer {
    addr: std::net::SocketAddr,
    child: std::process::Child,
}

impl GrpcioServer {
    async fn start(name: &str, options: &str) -> GrpcioServer {
        use std::io::BufRead;
        let pythonpath = tokio::task::spawn_blocking(python_path).await.unwrap();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpcio_server.py");
        let (name, options) = (name.to_string(), options.to_string());
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new("python3")
                .arg(script)
                .arg(name)
                .arg(options)
                .env("PYTHONPATH", pythonpath)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("run python3");
            let mut line = String::new();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            out.read_line(&mut line).expect("grpcio server output");
            let port: u16 = line
                .trim()
                .strip_prefix("port ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("grpcio server did not start: {line:?}"));
            GrpcioServer {
                addr: ([127, 0, 0, 1], port).into(),
                child,
            }
        })
        .await
        .unwrap()
    }
}

impl Drop for GrpcioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field fault: the gateway's own keepalive PINGs tripped a stock gRPC server's PING policy
/// (C-core: at most one PING per 5 min while a call is open and no data flows, one per 2 h on a
/// connection without calls, GOAWAY `too_many_pings` on the third early one), killing a quiet
/// server stream. Here the server's policy is shortened to 1 s and the gateway's keepalive set
/// to the same 1 s — the relation of the defaults (5 min and 5 min) — and the connection sits
/// idle, then carries a stream that stays quiet for six intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_never_trips_a_stock_grpcio_servers_ping_policy() {
    let server = GrpcioServer::start(
        "py",
        r#"{"grpc.http2.min_ping_interval_without_data_ms": 1000,
            "grpc.http2.max_ping_strikes": 2}"#,
    )
    .await;
    let gw = gateway(&support::single_worker(&config(
        &[server.addr.to_string()],
        "    pool: { keepalive_time: 1s, keepalive_timeout: 2s }\n",
    )))
    .await;
    let up = gw.running.upstream("u").unwrap();
    support::wait_until(10, "the pool's connection", || {
        !up.members().endpoints[0].pool.connection_ids().is_empty()
    })
    .await;
    let first = up.members().endpoints[0].pool.connection_ids();
    // Idle: a PING a second would be the third strike by now.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mut c = gw.client().await;
    let mut stream = c
        .server_stream(synapsor_testkit::EchoRequest {
            reply_count: 2,
            delay_ms: 6000,
            ..Default::default()
        })
        .await
        .expect("stream opens")
        .into_inner();
    let mut n = 0;
    while let Some(m) = tokio_stream::StreamExt::next(&mut stream).await {
        m.expect("the quiet stream is not cut by the server's PING policy");
        n += 1;
    }
    assert_eq!(n, 2);
    assert_eq!(
        up.members().endpoints[0].pool.connection_ids(),
        first,
        "one upstream connection throughout (no GOAWAY)"
    );
}

/// Field fault: a stream the upstream refused (RST_STREAM REFUSED_STREAM: never processed) was
/// retried once at once, often on the same full connection, and the call failed. A refused call
/// now waits for a stream slot within `queue_timeout` and its deadline. grpcio with
/// `grpc.max_concurrent_streams=2` and a 300 ms handler, a strict pool of 2 connections, three
/// bursts of 40 concurrent calls: every call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_wait_for_a_slot_on_a_busy_grpcio_server() {
    let server = GrpcioServer::start("py", r#"{"grpc.max_concurrent_streams": 2}"#).await;
    let gw = gateway(&config(
        &[server.addr.to_string()],
        "    pool: { mode: strict, max_connections: 2, queue_timeout: 30s }\n",
    ))
    .await;
    let c = gw.client().await;
    for burst in 0..3 {
        let calls = (0..40).map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.unary(synapsor_testkit::EchoRequest {
                    payload: vec![i as u8; 10],
                    delay_ms: 300,
                    ..Default::default()
                })
                .await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.unwrap().err())
            .map(|s| format!("{:?}: {}", s.code(), s.message()))
            .collect();
        assert!(
            failed.is_empty(),
            "burst {burst}: {} of 40 failed: {failed:?}",
            failed.len()
        );
    }
}
