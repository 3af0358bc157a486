//! The authorization and token services of `proto/authz.proto` as a process, for the callout
//! examples (`plugins/examples/ext-authz`, `token-cache`):
//!
//! `synapsor-authz --listen 127.0.0.1:50071 [--token-lifetime-ms 60000] [--slow-ms 2000]`
//!
//! serves `synapsor.test.v1.Authz`, `synapsor.test.v1.Tokens` and gRPC health until it is
//! stopped (Ctrl-C). The policy is in the testkit's `authz` module documentation.

use std::net::SocketAddr;
use std::time::Duration;

use synapsor_testkit::{AuthzOptions, AuthzServer};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn millis(args: &[String], name: &str, default: &str) -> Duration {
    let ms: u64 = arg(args, name, default).parse().unwrap_or_else(|_| {
        eprintln!("{name} takes a number of milliseconds");
        std::process::exit(2);
    });
    Duration::from_millis(ms)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: synapsor-authz [--listen ADDR] [--token-lifetime-ms N] [--slow-ms N]\n\
             default ADDR 127.0.0.1:50071, N 60000 and 2000"
        );
        return;
    }
    let listen: SocketAddr = arg(&args, "--listen", "127.0.0.1:50071")
        .parse()
        .unwrap_or_else(|_| {
            eprintln!("--listen takes ip:port");
            std::process::exit(2);
        });
    let server = AuthzServer::start(AuthzOptions {
        addr: Some(listen),
        token_lifetime: millis(&args, "--token-lifetime-ms", "60000"),
        slow_delay: millis(&args, "--slow-ms", "2000"),
    });
    println!("authz serving on {}", server.addr());
    let _ = tokio::signal::ctrl_c().await;
    server.stop().await;
}
