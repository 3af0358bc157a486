//! Run with `cargo run --release --example quickstart` (add `-- --once` to exit after the burst,
//! `-- --config FILE` to use another config whose upstreams are loopback addresses).
//!
//! Starts the echo backends that `config/synapsor.yaml` points at, starts the gateway on that
//! file, sends a burst of real gRPC calls through it with a progress bar, and prints how they
//! were spread over the backends and how fast they went. Then it keeps serving until Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use synapsor_testkit::{Backend, BackendOptions, EchoRequest};
use tokio::sync::Mutex;

const CALLS: u64 = 20_000;
const CONCURRENCY: u64 = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let once = std::env::args().any(|a| a == "--once");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "synapsor=warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .map_or("config/synapsor.yaml", String::as_str);
    let path = Path::new(path);
    let loaded = synapsor::config::load(path)?;
    let config = loaded.config;

    // The backends the default config names (loopback addresses only).
    let mut backends = Vec::new();
    let mut weights = BTreeMap::new();
    for up in &config.upstreams {
        for ep in &up.endpoints {
            let addr: SocketAddr = ep.address.parse()?;
            anyhow::ensure!(
                addr.ip().is_loopback(),
                "the demo only starts loopback backends"
            );
            let name = format!("backend-{}", addr.port());
            weights.insert(name.clone(), ep.weight);
            let opts = BackendOptions {
                addr: Some(addr),
                ..Default::default()
            };
            backends.push(Backend::start_with(&name, opts).await);
            println!(
                "started echo backend {name} on {addr} (weight {})",
                ep.weight
            );
        }
    }

    let gateway = synapsor::Gateway::bind(config.clone()).await?;
    let (name, addr) = gateway.listener_addrs()[0].clone();
    let admin = gateway.admin_addr();
    let running = gateway.start()?;
    let t = Instant::now();
    while running.readiness().is_err() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("gateway listener {name:?} on {addr}; admin on {admin:?}");

    let bar = ProgressBar::new(CALLS);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}")?
            .progress_chars("=> "),
    );
    let counts = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(CALLS as usize)));
    let client = synapsor_testkit::client(addr).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let mut client = client.clone();
        let (bar, counts, latencies) = (bar.clone(), counts.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            let mut i = w;
            while i < CALLS {
                let t = Instant::now();
                let req = EchoRequest {
                    payload: vec![7; 100],
                    ..Default::default()
                };
                match client.unary(req).await {
                    Ok(r) => {
                        *counts
                            .lock()
                            .await
                            .entry(r.into_inner().backend)
                            .or_default() += 1;
                        latencies.lock().await.push(t.elapsed());
                    }
                    Err(e) => {
                        if errors == 0 {
                            bar.println(format!("a call failed: {e:?}"));
                        }
                        errors += 1
                    }
                }
                bar.inc(1);
                i += CONCURRENCY;
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await?;
    }
    let elapsed = started.elapsed();
    bar.finish();

    let counts = counts.lock().await;
    let total_weight: u32 = weights.values().sum();
    println!(
        "\n{CALLS} unary calls through synapsor in {elapsed:.2?} ({:.0} calls/s), {errors} errors",
        CALLS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<16} {:>8} {:>8} {:>10}",
        "backend", "calls", "share", "weight share"
    );
    for (name, w) in &weights {
        let n = counts.get(name).copied().unwrap_or(0);
        println!(
            "{name:<16} {n:>8} {:>7.1}% {:>9.1}%",
            100.0 * n as f64 / CALLS as f64,
            100.0 * f64::from(*w) / f64::from(total_weight)
        );
    }
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    if !lat.is_empty() {
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!("latency p50 {:.2?}, p99 {:.2?}", p(0.50), p(0.99));
    }

    if !once {
        println!(
            "\nstill serving on {addr}: point any gRPC client at it. Ctrl-C stops (gracefully)."
        );
        tokio::signal::ctrl_c().await?;
    }
    running.shutdown().await;
    drop(backends);
    anyhow::ensure!(errors == 0, "{errors} calls failed");
    Ok(())
}
