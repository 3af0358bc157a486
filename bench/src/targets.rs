//! The processes a benchmark run starts: the echo backend, the synapsor gateway, and optionally
//! nginx and HAProxy with the configs kept in `bench/`. All listen on 127.0.0.1 only; every child
//! is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procfs;

/// A running process that traffic can be sent through (or to).
pub struct Target {
    /// Name in the report.
    pub name: String,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The process to measure (`None` for the direct connection).
    child: Option<Child>,
}

impl Target {
    /// The direct connection to the backend.
    pub fn direct(addr: SocketAddr) -> Target {
        Target {
            name: "direct".into(),
            addr,
            child: None,
        }
    }

    /// Root pid of the measured process tree.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// CPU time of the process and its children.
    pub fn cpu(&self) -> Duration {
        self.pid()
            .map(|p| tree(p).into_iter().map(procfs::cpu_time).sum())
            .unwrap_or_default()
    }

    /// Resets the peak-RSS watermark of the process tree.
    pub fn reset_rss(&self) {
        if let Some(p) = self.pid() {
            tree(p).into_iter().for_each(procfs::reset_peak_rss);
        }
    }

    /// Sum of the peak RSS of the process tree, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.pid()
            .map(|p| tree(p).into_iter().map(procfs::peak_rss_kib).sum())
            .unwrap_or(0)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // SIGTERM first, so that nginx and HAProxy masters take their workers down too.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `pid` and every process whose parent is in the set (nginx and HAProxy fork workers).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|x| x.1.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Starts the echo backend as a child process of this binary; returns it and its address.
pub fn backend() -> anyhow::Result<Target> {
    child_server("backend")
}

/// Starts `synapsor-bench <kind>` (`backend`, `authz`) as a child process serving on a loopback
/// port it reports; returns it and its address.
pub fn child_server(kind: &str) -> anyhow::Result<Target> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg(kind)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("start the {kind}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("the {kind} did not report its address"))?
        .parse()?;
    Ok(Target {
        name: kind.into(),
        addr,
        child: Some(child),
    })
}

fn wait_for_port(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("{what} did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn spawn(name: &str, cmd: &mut Command, addr: SocketAddr) -> anyhow::Result<Target> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {name}"))?;
    let t = Target {
        name: name.into(),
        addr,
        child: Some(child),
    };
    wait_for_port(addr, name)?;
    // Let its pools connect before traffic starts.
    std::thread::sleep(Duration::from_millis(300));
    Ok(t)
}

/// What runs in front of synapsor's forwarder in a benchmark target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// No stages.
    Plain,
    /// Issue 4's built-in chain.
    Stages,
    /// One WASM plugin (`isolation: reuse`) that reads every metadata entry and lets the call
    /// through; both hooks called.
    Plugin,
    /// The same plugin with `on_response: false`.
    PluginRequestOnly,
    /// The same plugin asking for both message hooks, which continue every message.
    MessagePlugin,
    /// The `pii-redact` example redacting fields 1.1 and 1.2 in both directions.
    PiiRedact,
    /// A `rate_limit` in this process that the load never reaches.
    LocalLimit,
    /// The same limit shared through the redis-server on this port.
    RedisLimit(u16),
    /// The `ext-authz` example asking the authorization service at this address, its decisions
    /// cached (`true`: one state lookup per call) or not (one callout per call).
    ExtAuthz(SocketAddr, bool),
    /// The `header-rewrite` example built from this language (`rs`, `py`, `js`), both hooks,
    /// `isolation: reuse`.
    Rewrite(&'static str),
}

/// A redis-server without persistence on a free loopback port; stopped when dropped.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Child,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts redis-server (Debian: `apt-get install redis-server`).
pub fn redis() -> anyhow::Result<RedisServer> {
    let port = free_addr().port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(RedisServer { port, child })
}

/// Starts the synapsor binary at `bin` in front of `backend`.
pub fn synapsor(
    bin: &Path,
    backend: SocketAddr,
    dir: &Path,
    workers: usize,
    chain: Chain,
) -> anyhow::Result<Target> {
    let (addr, admin) = (free_addr(), free_addr());
    let name = match chain {
        Chain::Plain => "synapsor",
        Chain::Stages => "synapsor+stages",
        Chain::Plugin => "synapsor+plugin",
        Chain::PluginRequestOnly => "synapsor+plugin-req",
        Chain::MessagePlugin => "synapsor+msg-plugin",
        Chain::PiiRedact => "synapsor+pii-redact",
        Chain::LocalLimit => "synapsor+limit",
        Chain::RedisLimit(_) => "synapsor+redis-limit",
        Chain::ExtAuthz(_, true) => "synapsor+ext-authz",
        Chain::ExtAuthz(_, false) => "synapsor+ext-authz-nocache",
        Chain::Rewrite("rs") => "synapsor+rewrite-rs",
        Chain::Rewrite("py") => "synapsor+rewrite-py",
        Chain::Rewrite(_) => "synapsor+rewrite-js",
    };
    let cfg = dir.join(format!("{name}.yaml"));
    let interceptors = match chain {
        Chain::Plain => String::new(),
        // Issue 4's chain — a rate limit the load never reaches, API-key auth, metrics, and the
        // access log sampled at 1% — to measure what the stage mechanism costs.
        Chain::Stages => format!(
            "    interceptors:\n      - rate_limit: {{ rate: 100000000, per: 1s, key: peer_ip }}\n      - api_key: {{ keys: [ {{ key: {}, principal: bench }} ] }}\n      - metrics: {{}}\n      - access_log: {{ format: json, output: \"{}\", sample: 0.01 }}\n",
            crate::load::API_KEY,
            dir.join("access.log").display()
        ),
        Chain::Plugin | Chain::PluginRequestOnly => format!(
            "    interceptors:\n      - wasm: {{ name: reader, path: \"{}\", isolation: reuse, on_response: {} }}\n",
            plugin("misbehave")?.display(),
            chain == Chain::Plugin
        ),
        Chain::MessagePlugin => format!(
            "    interceptors:\n      - wasm: {{ name: reader, path: \"{}\", isolation: reuse, config: {{ messages: true, response_messages: true }} }}\n",
            plugin("misbehave")?.display(),
        ),
        Chain::PiiRedact => format!(
            "    interceptors:\n      - wasm: {{ name: pii, path: \"{}\", isolation: reuse, config: {{ fields: [\"1.1\", \"1.2\"] }} }}\n",
            plugin("pii_redact")?.display(),
        ),
        // A limit the load never reaches, per client IP: in this process, or in Redis (one
        // script call per call; a failing Redis would show as errors).
        Chain::LocalLimit => {
            "    interceptors:\n      - rate_limit: { rate: 100000000, per: 1s, key: peer_ip }\n"
                .to_string()
        }
        Chain::ExtAuthz(_, cached) => format!(
            "    interceptors:\n      - wasm: {{ name: authz, path: \"{}\", max_instances: 128, on_response: false, callouts: {{ groups: [authz] }}, config: {{ cache_ttl_ms: {} }} }}\n",
            plugin("ext_authz")?.display(),
            if cached { 600_000 } else { 0 },
        ),
        Chain::Rewrite(lang) => format!(
            "    interceptors:\n      - wasm: {{ name: rewrite, path: \"{}\", memory_limit: 48MiB, timeout: 50ms, max_instances: 16, config: {{ set: {{ x-env: prod }}, append: {{ x-via: synapsor }}, remove: [x-debug], trailers: {{ x-served-by: synapsor }} }} }}\n",
            plugin(&match lang {
                "rs" => "header_rewrite".to_string(),
                other => format!("header_rewrite_{other}"),
            })?
            .display(),
        ),
        Chain::RedisLimit(port) => format!(
            "    interceptors:\n      - rate_limit: {{ rate: 100000000, per: 1s, key: peer_ip, on_backend_error: deny, backend: {{ redis: \"redis://127.0.0.1:{port}/0\" }} }}\n"
        ),
    };
    let authz = match chain {
        Chain::ExtAuthz(a, _) => format!("  - name: authz\n    endpoints: [ \"{a}\" ]\n"),
        _ => String::new(),
    };
    std::fs::write(
        &cfg,
        format!(
            "runtime: {{ workers: {workers} }}\n\
             admin: {{ listen: {admin} }}\n\
             listeners:\n  - name: bench\n    listen: {addr}\n    upstream: echo\n{interceptors}\
             upstreams:\n  - name: echo\n    endpoints: [ \"{backend}\" ]\n    request_timeout: 0\n{authz}"
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.args(["--log-level", "warn", "run", "-c"]).arg(&cfg);
    spawn(name, &mut cmd, addr)
}

fn template(
    name: &str,
    backend: SocketAddr,
    listen: SocketAddr,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let text = std::fs::read_to_string(&src)?
        .replace("@LISTEN@", &listen.to_string())
        .replace("@BACKEND@", &backend.to_string())
        .replace("@DIR@", &dir.display().to_string());
    let out = dir.join(name.trim_end_matches(".tmpl"));
    std::fs::write(&out, text)?;
    Ok(out)
}

/// Starts nginx (`grpc_pass`) from `bench/nginx.conf.tmpl`, if nginx is installed.
pub fn nginx(backend: SocketAddr, dir: &Path) -> anyhow::Result<Target> {
    let addr = free_addr();
    let conf = template("nginx.conf.tmpl", backend, addr, dir)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    spawn("nginx", &mut cmd, addr)
}

/// Starts HAProxy from `bench/haproxy.cfg.tmpl`, if HAProxy is installed.
pub fn haproxy(backend: SocketAddr, dir: &Path) -> anyhow::Result<Target> {
    let addr = free_addr();
    let conf = template("haproxy.cfg.tmpl", backend, addr, dir)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&conf);
    spawn("haproxy", &mut cmd, addr)
}

/// A plugin component from `plugins/build/`, built with `plugins/build.sh` when missing.
fn plugin(name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("plugins/build").join(format!("{name}.wasm"));
    if !file.exists() {
        let ok = Command::new("bash")
            .arg(root.join("plugins/build.sh"))
            .status()?
            .success();
        anyhow::ensure!(ok, "plugins/build.sh failed");
    }
    Ok(file)
}
