//! The `synapsor` binary: `check` on every bundled config and on bad ones (file, line, field),
//! `version`, and `run` draining gracefully on SIGTERM with a call in flight, exiting 0.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use synapsor_testkit::{Backend, EchoRequest};

fn synapsor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_synapsor"))
}

async fn run_until_ready(cfg: &Path, admin: std::net::SocketAddr) -> std::process::Child {
    support::run_binary(cfg, admin).await
}

#[test]
fn every_file_under_config_is_valid() {
    // config/examples/plugins.yaml loads plugins/build/*.wasm.
    support::plugin("probe");
    let mut files = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("config")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        synapsor::config::load(&f).unwrap_or_else(|e| panic!("{e}"));
        let out = synapsor().args(["check", "-c"]).arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_reports_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("synapsor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners:\n  - name: l\n    listen: 127.0.0.1:1\n    upstream: u\nupstreams:\n  - name: u\n    endpoints: [ \"a:1\" ]\n    pool: { mode: sloppy }\n",
    )
    .unwrap();
    let out = synapsor().args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:8:"), "{err}");
    assert!(err.contains("upstreams[0].pool.mode"), "{err}");
    assert!(err.contains("unknown variant `sloppy`"), "{err}");
    let out = synapsor()
        .args(["check", "-c", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/full.yaml");
    let out = synapsor()
        .args(["check", "-c"])
        .arg(&full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener public (0.0.0.0:30880): access_log -> metrics -> api_key -> rate_limit -> rate_limit -> concurrency_limit -> route"),
        "{err}"
    );
    assert!(
        err.contains("  route 0 (to billing): then rate_limit -> billing"),
        "{err}"
    );
    let out = synapsor().arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("synapsor "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drains_on_sigterm_and_exits_zero() {
    let b = Backend::start("b").await;
    let (listen, admin) = (support::free_port(), support::free_port());
    let dir = std::env::temp_dir().join(format!("synapsor-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("run.yaml");
    std::fs::write(
        &cfg,
        format!(
            "admin: {{ listen: {admin} }}\nlisteners:\n  - {{ name: l, listen: {listen}, upstream: u, drain_timeout: 10s }}\nupstreams:\n  - {{ name: u, endpoints: [ \"{}\" ] }}\n",
            b.addr
        ),
    )
    .unwrap();
    let mut child = run_until_ready(&cfg, admin).await;
    let mut c = synapsor_testkit::client(listen).await;
    let call = tokio::spawn(async move {
        c.unary(EchoRequest {
            delay_ms: 1000,
            ..Default::default()
        })
        .await
    });
    support::wait_until(10, "the call to reach the backend", || {
        b.observed.in_flight() == 1
    })
    .await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    call.await
        .unwrap()
        .expect("the call in flight finished during the drain");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "gateway did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn check_compiles_plugins_and_prints_their_exports_and_imports() {
    let dir = std::env::temp_dir().join(format!("synapsor-check-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, stage: String| {
        let f = dir.join(name);
        std::fs::write(
            &f,
            format!(
                "listeners:\n  - name: l\n    listen: 127.0.0.1:1\n    upstream: u\n    interceptors:\n      - {stage}\nupstreams:\n  - {{ name: u, endpoints: [ \"127.0.0.1:2\" ] }}\n"
            ),
        )
        .unwrap();
        f
    };
    let good = write(
        "good.yaml",
        format!(
            "wasm: {{ name: deny, path: \"{}\", config: {{ deny_prefix: /x. }} }}",
            support::plugin("method_deny").display()
        ),
    );
    let out = synapsor()
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("l (127.0.0.1:1): wasm:deny -> route"), "{err}");
    assert!(err.contains("plugin deny ("), "{err}");
    assert!(
        err.contains("exports: init, on-request, on-response"),
        "{err}"
    );
    assert!(
        err.contains("imports: synapsor:plugin/host@0.1.0, synapsor:plugin/types@0.1.0"),
        "{err}"
    );
    assert!(
        err.contains("MiB of linear memory (memory_limit 16MiB), created and initialised in"),
        "{err}"
    );
    let bad = write(
        "bad.yaml",
        format!(
            "wasm: {{ name: deny, path: \"{}\" }}",
            support::plugin("method_deny").display()
        ),
    );
    let out = synapsor().args(["check", "-c"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plugin deny: plugin ")
            && err.contains("init failed: config.deny_prefix is required"),
        "{err}"
    );
    // A plugin that imports `callout` with no group to call: checked, with a warning.
    let authz = |extra: &str| {
        format!(
            "wasm: {{ name: authz, path: \"{}\"{extra} }}",
            support::plugin("ext_authz").display()
        )
    };
    let out = synapsor()
        .args(["check", "-c"])
        .arg(write("authz.yaml", authz("")))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: it imports synapsor:plugin/callout"),
        "{err}"
    );
    let out = synapsor()
        .args(["check", "-c"])
        .arg(write("authz2.yaml", authz(", callouts: { groups: [u] }")))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("warning"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_changed_plugin() {
    let b = Backend::start("b").await;
    let (listen, admin) = (support::free_port(), support::free_port());
    let dir = std::env::temp_dir().join(format!("synapsor-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("p.wasm");
    std::fs::copy(support::plugin("probe"), &wasm).unwrap();
    let cfg = dir.join("run.yaml");
    std::fs::write(
        &cfg,
        format!(
            "admin: {{ listen: {admin} }}\nlisteners:\n  - name: l\n    listen: {listen}\n    upstream: u\n    interceptors:\n      - wasm: {{ name: p, path: \"{}\", watch: false, timeout: 2s }}\nupstreams:\n  - {{ name: u, endpoints: [ \"{}\" ] }}\n",
            wasm.display(),
            b.addr
        ),
    )
    .unwrap();
    let mut child = run_until_ready(&cfg, admin).await;
    let mut c = synapsor_testkit::client(listen).await;
    let probed = |b: &Backend| {
        let md = b.observed.last_metadata.lock().unwrap().clone().unwrap();
        md.get("x-probe-method").is_some()
    };
    c.unary(EchoRequest::default()).await.unwrap();
    assert!(probed(&b));
    std::fs::copy(support::plugin("header_rewrite"), dir.join("new.wasm")).unwrap();
    std::fs::rename(dir.join("new.wasm"), &wasm).unwrap();
    // watch: false — nothing changes until the signal.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.unary(EchoRequest::default()).await.unwrap();
    assert!(probed(&b), "not reloaded without SIGHUP");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let t = Instant::now();
    loop {
        c.unary(EchoRequest::default())
            .await
            .expect("calls flow through the reload");
        if !probed(&b) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "SIGHUP did not reload the plugin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the gateway"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
