//! Shared test support: start the gateway in-process from YAML text on 127.0.0.1 ports, wait
//! for conditions with generous bounds, and a few raw-protocol helpers.

pub mod raw_h2;
pub mod redis;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use synapsor::Running;
use synapsor_testkit::EchoClient;
use tonic::transport::Channel;

/// A gateway serving in this process.
pub struct TestGateway {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener, by name.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin address, when enabled.
    pub admin: Option<SocketAddr>,
    /// The running gateway.
    pub running: Running,
}

impl TestGateway {
    /// A tonic client to the first listener.
    pub async fn client(&self) -> EchoClient<Channel> {
        synapsor_testkit::client(self.addr).await
    }

    /// Open pooled connections to the endpoint `index` of upstream `name`.
    pub fn open_connections(&self, name: &str, index: usize) -> usize {
        self.running.upstream(name).unwrap().members().endpoints[index]
            .pool
            .open_connections()
    }
}

/// Parses `yaml` (listeners should listen on 127.0.0.1:0), binds and starts the gateway, and
/// waits (up to 5 s) until it is ready, unless some endpoint is meant to be down.
pub async fn gateway(yaml: &str) -> TestGateway {
    let loaded = synapsor::config::parse(yaml, Path::new("test.yaml")).expect("valid config");
    serve(synapsor::Gateway::bind(loaded.config).await.expect("bind")).await
}

/// Starts a bound gateway and waits (up to 5 s) until it is ready.
pub async fn serve(gw: synapsor::Gateway) -> TestGateway {
    let listeners = gw.listener_addrs();
    let admin = gw.admin_addr();
    let running = gw.start().expect("start");
    let t = Instant::now();
    while running.readiness().is_err() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    TestGateway {
        addr: listeners[0].1,
        listeners,
        admin,
        running,
    }
}

/// Runs the gateway of `cfg` (from [`config`]) on a single worker, for tests that count one
/// pool's connections.
pub fn single_worker(cfg: &str) -> String {
    format!("runtime: {{ workers: 1 }}\n{cfg}")
}

/// A one-listener, one-upstream config over `endpoints` (`host:port#weight` strings), with
/// extra YAML lines for the upstream (indented 4 spaces) appended.
pub fn config(endpoints: &[String], upstream_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n\
         listeners:\n  - {{ name: l, listen: 127.0.0.1:0, upstream: u, drain_timeout: 5s }}\n\
         upstreams:\n  - name: u\n    endpoints: [ {} ]\n{upstream_extra}",
        eps.join(", ")
    )
}

/// Polls `f` every 10 ms until it is true; panics after `secs` seconds (a hang guard only).
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free loopback port (bound then released): nothing listens there afterwards.
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Sends a plain HTTP/1.1 GET to the admin listener; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path).await
}

/// Sends a plain HTTP/1.1 POST with an empty body to the admin listener; returns (status, body).
pub async fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "POST", path).await
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Like [`http_get`], but `None` when nothing answers yet.
pub async fn http_get_opt(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.get(9..12)?.parse().ok()
}

/// The path of a built plugin component (`plugins/build/NAME.wasm`). The first call in a test
/// binary builds every plugin with `plugins/build.sh` (Rust for wasm32-wasip2, and C).
pub fn plugin(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILT.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(root.join("plugins/build.sh"))
            .output()
            .expect("running plugins/build.sh");
        assert!(
            out.status.success(),
            "plugins/build.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    root.join("plugins/build").join(format!("{name}.wasm"))
}

/// A one-listener config (admin on a free port) with these stage lines (indented 6 spaces) in
/// front of one upstream `u` at `backend`.
pub fn staged_config(backend: &str, stages: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    interceptors:
{stages}
upstreams:
  - {{ name: u, endpoints: [ \"{backend}\" ] }}
"
    )
}

/// A `wasm` stage line for the built plugin `file` (a generous 2 s timeout: debug builds on a
/// busy machine are slow), with `extra` YAML fields appended.
pub fn wasm_stage(name: &str, file: &str, extra: &str) -> String {
    format!(
        "      - wasm: {{ name: {name}, path: \"{}\", timeout: 2s{extra} }}",
        plugin(file).display()
    )
}

/// Every value of metadata `name` in the last call `b` saw.
pub fn metadata_values(b: &synapsor_testkit::Backend, name: &str) -> Vec<String> {
    let md = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    md.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The first value of metadata `name` in the last call `b` saw.
pub fn first_metadata(b: &synapsor_testkit::Backend, name: &str) -> Option<String> {
    metadata_values(b, name).into_iter().next()
}

/// Starts `synapsor run -c cfg` (the binary built for these tests) and waits (up to 20 s)
/// until its admin `/readyz` answers 200. Its log goes to the test's output when
/// `SYNAPSOR_TEST_LOG` is set.
pub async fn run_binary(cfg: &Path, admin: SocketAddr) -> std::process::Child {
    let log = || {
        if std::env::var_os("SYNAPSOR_TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        }
    };
    // SYNAPSOR_TEST_BIN runs another build (to see that a test fails on an older binary).
    let bin = std::env::var_os("SYNAPSOR_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_synapsor").into());
    let child = std::process::Command::new(bin)
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(log())
        .stderr(log())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while http_get_opt(admin, "/readyz").await != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// The resident set size of process `pid`, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Ends a child process with SIGTERM and reaps it.
pub fn terminate(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A raw HTTP/2 server on 127.0.0.1 that hands each stream, and a counter it returns, to
/// `on_stream` (run as a task per stream).
pub async fn h2_upstream<F, Fut>(
    on_stream: F,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>)
where
    F: Fn(
            h2::server::SendResponse<bytes::Bytes>,
            std::sync::Arc<std::sync::atomic::AtomicU64>,
        ) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = counter.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (count, on_stream) = (count.clone(), on_stream.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_req, respond))) = conn.accept().await {
                    tokio::spawn(on_stream(respond, count.clone()));
                }
            });
        }
    });
    (addr, counter)
}

/// An HTTP/2 server on 127.0.0.1 that refuses every stream with RST_STREAM(REFUSED_STREAM);
/// returns its address and how many streams it refused.
pub async fn refuser() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    h2_upstream(|mut respond, count| async move {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    })
    .await
}

/// Good calls on their own connection while `f` runs; returns how many succeeded, and fails
/// the test if any did not.
pub async fn while_flowing<F: std::future::Future<Output = ()>>(gw: &TestGateway, f: F) -> u64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut c = gw.client().await;
    let bg = {
        let (stop, ok) = (stop.clone(), ok.clone());
        tokio::spawn(async move {
            // Bounded: at most 100k calls or until told to stop.
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                c.unary(synapsor_testkit::EchoRequest::default())
                    .await
                    .expect("a well-behaved call failed while the plugin misbehaved");
                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    f.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    bg.await.unwrap();
    ok.load(std::sync::atomic::Ordering::Relaxed)
}
