//! A real `redis-server` child process for the tests of shared rate limits and plugin state.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process without persistence.
pub struct Redis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// Installs Debian's redis-server when it is missing (as root, or with sudo), once.
fn ensure_installed() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        if Command::new("redis-server").arg("--version").output().is_ok() {
            return;
        }
        let sudo = if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout != b"0\n") {
            "sudo "
        } else {
            ""
        };
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{sudo}apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -q redis-server >/dev/null"
            ))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing redis-server failed");
    });
}

impl Redis {
    /// Starts one on `port`, and waits until it accepts connections.
    pub async fn start(port: u16) -> Redis {
        ensure_installed();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis { child, port }
    }

    /// Kills it (and waits for it to go).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
