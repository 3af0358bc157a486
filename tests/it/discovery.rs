//! `dns://` endpoints and SIGHUP config reloads, through the real binary and the system
//! resolver: the gateway runs in a mount namespace of its own (`unshare -m`) with a test hosts
//! file bound over `/etc/hosts`, so the test can change what the name resolves to. Backends
//! listen on 127.0.0.1 and 127.0.0.2 with the same port, as pods behind a headless service do.

use crate::support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synapsor_testkit::{Backend, BackendOptions, EchoRequest};

const NAME: &str = "backends.synapsor.test";

fn run_in_namespace(hosts: &std::path::Path, cfg: &std::path::Path) -> Child {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' /etc/hosts && exec '{}' run -c '{}'",
            hosts.display(),
            env!("CARGO_BIN_EXE_synapsor"),
            cfg.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs the gateway in its own mount namespace")
}

/// The backends that answered 30 calls.
async fn answering(listen: SocketAddr) -> Vec<String> {
    let mut c = synapsor_testkit::client(listen).await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        let name = c
            .unary(EchoRequest::default())
            .await
            .expect("calls succeed")
            .into_inner()
            .backend;
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen.sort();
    seen
}

async fn wait_for_backends(listen: SocketAddr, want: &[&str], what: &str) {
    let t = Instant::now();
    loop {
        if answering(listen).await == want {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_endpoints_follow_the_resolver_and_sighup_reloads_the_config() {
    let a = Backend::start("a").await;
    let port = a.addr.port();
    let _b = Backend::start_with(
        "b",
        BackendOptions {
            addr: Some(SocketAddr::from(([127, 0, 0, 2], port))),
            ..Default::default()
        },
    )
    .await;
    let (listen, admin) = (support::free_port(), support::free_port());
    let dir = std::env::temp_dir().join(format!("synapsor-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n")).unwrap();
    let cfg = dir.join("run.yaml");
    let config = |endpoint: &str| {
        format!(
            "admin: {{ listen: {admin} }}\nreload: {{ watch: false }}\nlisteners:\n  - {{ name: l, listen: {listen}, upstream: u }}\nupstreams:\n  - {{ name: u, balance: round_robin, resolve_interval: 200ms, endpoints: [ \"{endpoint}\" ] }}\n"
        )
    };
    std::fs::write(&cfg, config(&format!("dns://{NAME}:{port}"))).unwrap();
    let mut child = run_in_namespace(&hosts, &cfg);
    let t = Instant::now();
    while support::http_get_opt(admin, "/readyz").await != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answering(listen).await, ["a"]);

    // The name now resolves to two addresses: both serve.
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n127.0.0.2 {NAME}\n"),
    )
    .unwrap();
    wait_for_backends(listen, &["a", "b"], "the second address joins").await;
    let (_, ups) = support::http_get(admin, "/upstreams").await;
    assert!(ups.contains(&format!("127.0.0.2:{port}")), "{ups}");

    // Only the second: the first drains away.
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.2 {NAME}\n")).unwrap();
    wait_for_backends(listen, &["b"], "the first address leaves").await;

    // SIGHUP reloads the config file (watch is off): a static endpoint replaces the name.
    std::fs::write(&cfg, config(&a.addr.to_string())).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        answering(listen).await,
        ["b"],
        "nothing changes before the signal"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for_backends(listen, &["a"], "SIGHUP applies the new config").await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
