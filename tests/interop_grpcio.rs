//! Interoperability with a second gRPC stack: Python grpcio (gRPC's C core) as the client,
//! through the gateway, to the tonic echo backend. grpcio comes from PyPI; when it is not
//! importable, the test installs a pinned version into the target directory first.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{config, gateway};
use synapsor_testkit::Backend;

const GRPCIO: &str = "grpcio==1.85.3";

/// A PYTHONPATH under which `import grpc` works.
fn python_path() -> PathBuf {
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
