//! The example backend and load client of the container demo (`deployments/`):
//!
//! - `synapsor-echo serve --listen 0.0.0.0:50051 --name backend-1` serves the echo service
//!   (and gRPC health) until it is stopped;
//! - `synapsor-echo load --target gateway:30880 --rate 20` sends that many unary calls per
//!   second, printing a line per second with how many succeeded and which backends answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use synapsor_testkit::{Backend, BackendOptions, EchoRequest};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(&args).await,
        Some("load") => load(&args).await,
        _ => {
            eprintln!(
                "usage: synapsor-echo serve [--listen ADDR] [--name NAME]\n       synapsor-echo load --target HOST:PORT [--rate N]"
            );
            std::process::exit(2);
        }
    }
}

async fn serve(args: &[String]) {
    let listen: SocketAddr = arg(args, "--listen", "0.0.0.0:50051")
        .parse()
        .expect("--listen takes ip:port");
    let name = arg(args, "--name", "echo");
    let b = Backend::start_with(
        &name,
        BackendOptions {
            addr: Some(listen),
            ..Default::default()
        },
    )
    .await;
    println!("{name} serving on {}", b.addr);
    let _ = tokio::signal::ctrl_c().await;
}

async fn load(args: &[String]) {
    let target = arg(args, "--target", "127.0.0.1:30880");
    let rate: u64 = arg(args, "--rate", "20")
        .parse()
        .expect("--rate takes a number");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .expect("--target takes host:port")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let mut client = synapsor_testkit::EchoClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(1 << 20);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate.clamp(1, 1000)));
    let mut second = tokio::time::Instant::now();
    let (mut ok, mut failed, mut by) = (0u64, 0u64, BTreeMap::<String, u64>::new());
    loop {
        tick.tick().await;
        match client.unary(EchoRequest::default()).await {
            Ok(r) => {
                ok += 1;
                *by.entry(r.into_inner().backend).or_default() += 1;
            }
            Err(st) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("call failed: {} {}", st.code(), st.message());
                }
            }
        }
        if second.elapsed() >= Duration::from_secs(1) {
            println!("{ok} ok, {failed} failed, by backend {by:?}");
            (ok, failed) = (0, 0);
            by.clear();
            second = tokio::time::Instant::now();
        }
    }
}
