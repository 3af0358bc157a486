//! Run with `cargo run --release -p synapsor-bench` (after `cargo build --release`).
//!
//! Measures each load directly against an echo backend and through synapsor (and, with
//! `--targets direct,synapsor,nginx,haproxy`, through nginx and HAProxy) in one run, rotating the
//! order of targets each round, and prints medians over the rounds: throughput, p50/p99 latency,
//! errors, the proxy's CPU seconds and peak RSS (from /proc), and each target's ratio to direct.
//!
//! Options: `--rounds N` (3), `--secs S` per measurement (5), `--loads a,b` (all five; also
//! `unary-100b-h2load`, the small unary load from `h2load`, Debian's nghttp2-client),
//! `--targets a,b` (direct,synapsor; also synapsor+stages, synapsor+plugin, synapsor+plugin-req, synapsor+msg-plugin, synapsor+pii-redact, synapsor+limit, synapsor+redis-limit, nginx, haproxy), `--gateway PATH` (target/release/synapsor), `--workers N`
//! (the gateway's `runtime.workers`; 0, one per core).
//!
//! `synapsor-bench callout` compares small unary calls through the `ext-authz` example (cached
//! and not) with the plain gateway and with the authorization call made directly (`callout.rs`).

mod callout;
mod h2load;
mod load;
mod procfs;
mod targets;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use load::{Load, Outcome};
use targets::{Chain, Target};

struct Args {
    rounds: usize,
    secs: u64,
    loads: Vec<Load>,
    targets: Vec<String>,
    gateway: PathBuf,
    workers: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 3,
        secs: 5,
        loads: Load::ALL.to_vec(),
        targets: vec!["direct".into(), "synapsor".into()],
        gateway: PathBuf::from("target/release/synapsor"),
        workers: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--rounds" => a.rounds = v()?.parse()?,
            "--secs" => a.secs = v()?.parse()?,
            "--gateway" => a.gateway = v()?.into(),
            "--workers" => a.workers = v()?.parse()?,
            "--targets" => a.targets = v()?.split(',').map(str::to_string).collect(),
            "--loads" => {
                let names = v()?;
                a.loads = names
                    .split(',')
                    .map(|n| {
                        Load::KNOWN
                            .into_iter()
                            .find(|l| l.name() == n)
                            .with_context(|| format!("unknown load {n}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!("unknown option {other}"),
        }
    }
    if a.rounds == 0 || a.secs == 0 || a.secs > 120 {
        bail!("--rounds must be at least 1 and --secs from 1 to 120");
    }
    Ok(a)
}

/// One measurement of one load on one target.
struct Sample {
    outcome: Outcome,
    cpu: Duration,
    rss_kib: u64,
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("backend") => return serve_backend(),
        Some("authz") => return serve_authz(),
        Some("callout") => return callout_comparison(),
        _ => {}
    }
    let a = args()?;
    if a.loads.contains(&Load::Unary100H2load) && !h2load::available() {
        bail!(
            "unary-100b-h2load needs h2load on the PATH (Debian: apt-get install nghttp2-client)"
        );
    }
    let dir = std::env::temp_dir().join(format!("synapsor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let backend = targets::backend()?;
    let redis = if a.targets.iter().any(|t| t == "synapsor+redis-limit") {
        Some(targets::redis()?)
    } else {
        None
    };
    let mut ts = Vec::new();
    for name in &a.targets {
        ts.push(match name.as_str() {
            "direct" => Target::direct(backend.addr),
            gateway if gateway.starts_with("synapsor") => {
                let chain = match gateway {
                    "synapsor" => Chain::Plain,
                    "synapsor+stages" => Chain::Stages,
                    "synapsor+plugin" => Chain::Plugin,
                    "synapsor+rewrite-rs" => Chain::Rewrite("rs"),
                    "synapsor+rewrite-py" => Chain::Rewrite("py"),
                    "synapsor+rewrite-js" => Chain::Rewrite("js"),
                    "synapsor+plugin-req" => Chain::PluginRequestOnly,
                    "synapsor+msg-plugin" => Chain::MessagePlugin,
                    "synapsor+pii-redact" => Chain::PiiRedact,
                    "synapsor+limit" => Chain::LocalLimit,
                    "synapsor+redis-limit" => {
                        Chain::RedisLimit(redis.as_ref().expect("started above").port)
                    }
                    other => bail!("unknown target {other}"),
                };
                targets::synapsor(&a.gateway, backend.addr, &dir, a.workers, chain)?
            }
            "nginx" => targets::nginx(backend.addr, &dir)?,
            "haproxy" => targets::haproxy(backend.addr, &dir)?,
            other => bail!("unknown target {other}"),
        });
    }
    if !a.targets.iter().any(|t| t == "direct") {
        bail!("the targets must include direct: every figure is a ratio to it");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let duration = Duration::from_secs(a.secs);
    // samples[load][target] = one Sample per round
    let mut samples: BTreeMap<(usize, usize), Vec<Sample>> = BTreeMap::new();
    for round in 0..a.rounds {
        for (li, &l) in a.loads.iter().enumerate() {
            for k in 0..ts.len() {
                let ti = (k + round) % ts.len();
                let t = &ts[ti];
                t.reset_rss();
                let mut cpu0 = t.cpu();
                let outcome = if l == Load::Unary100H2load {
                    h2load::run(t.addr, duration, &dir)?
                } else {
                    rt.block_on(load::run(l, t.addr, duration, || cpu0 = t.cpu()))?
                };
                let cpu = t.cpu().saturating_sub(cpu0);
                let rss_kib = t.peak_rss_kib();
                eprintln!(
                    "round {} {:<14} {:<9} {:>12.0} {} errors {}",
                    round + 1,
                    l.name(),
                    t.name,
                    outcome.rate(),
                    l.unit(),
                    outcome.errors
                );
                samples.entry((li, ti)).or_default().push(Sample {
                    outcome,
                    cpu,
                    rss_kib,
                });
            }
        }
    }
    print_report(&a, &ts, &mut samples);
    drop(ts);
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn print_report(a: &Args, ts: &[Target], samples: &mut BTreeMap<(usize, usize), Vec<Sample>>) {
    let direct = ts.iter().position(|t| t.name == "direct").expect("direct");
    println!(
        "\n{} rounds of {} s per load and target; medians over rounds.\n",
        a.rounds, a.secs
    );
    println!("| load | target | throughput | × direct | p50 µs | p99 µs | errors | proxy CPU s | per proxy CPU-s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (li, l) in a.loads.iter().enumerate() {
        let direct_rates: Vec<f64> = samples[&(li, direct)]
            .iter()
            .map(|s| s.outcome.rate())
            .collect();
        for (ti, t) in ts.iter().enumerate() {
            let ss = samples.get_mut(&(li, ti)).expect("sampled");
            let rate = median(ss.iter().map(|s| s.outcome.rate()).collect());
            // Ratio per round (same round, same conditions), then the median.
            let ratio = median(
                ss.iter()
                    .zip(&direct_rates)
                    .map(|(s, d)| s.outcome.rate() / d)
                    .collect(),
            );
            let p50: Vec<f64> = ss
                .iter_mut()
                .filter_map(|s| s.outcome.quantile(0.5).map(f64::from))
                .collect();
            let p99: Vec<f64> = ss
                .iter_mut()
                .filter_map(|s| s.outcome.quantile(0.99).map(f64::from))
                .collect();
            let q = |v: Vec<f64>| {
                if v.is_empty() {
                    "–".to_string()
                } else {
                    format!("{:.0}", median(v))
                }
            };
            let errors: u64 = ss.iter().map(|s| s.outcome.errors).sum();
            let (cpu, per_cpu, rss) = if t.pid().is_some() {
                let cpu = median(ss.iter().map(|s| s.cpu.as_secs_f64()).collect());
                let per = median(
                    ss.iter()
                        .map(|s| s.outcome.count as f64 / s.cpu.as_secs_f64().max(1e-3))
                        .collect(),
                );
                let rss = ss.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
                (
                    format!("{cpu:.2}"),
                    format!("{per:.0}"),
                    format!("{rss:.1}"),
                )
            } else {
                ("–".into(), "–".into(), "–".into())
            };
            println!(
                "| {} | {} | {:.0} {} | {:.2} | {} | {} | {} | {} | {} | {} |",
                l.name(),
                t.name,
                rate,
                l.unit(),
                ratio,
                q(p50),
                q(p99),
                errors,
                cpu,
                per_cpu,
                rss
            );
        }
    }
}

/// `synapsor-bench callout [--rounds N] [--secs S] [--gateway PATH]`: see `callout.rs`.
fn callout_comparison() -> anyhow::Result<()> {
    let mut it = std::env::args().skip(2);
    let (mut rounds, mut secs, mut gateway) = (3, 4, PathBuf::from("target/release/synapsor"));
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--rounds" => rounds = v.parse()?,
            "--secs" => secs = v.parse()?,
            "--gateway" => gateway = v.into(),
            other => bail!("unknown option {other}"),
        }
    }
    if rounds == 0 || secs == 0 || secs > 120 {
        bail!("--rounds must be at least 1 and --secs from 1 to 120");
    }
    let dir = std::env::temp_dir().join(format!("synapsor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = callout::run(&gateway, &dir, rounds, secs);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// `synapsor-bench authz`: testkit's authorization service in its own process; prints its
/// address.
fn serve_authz() -> anyhow::Result<()> {
    let server = synapsor_testkit::AuthzServer::start(synapsor_testkit::AuthzOptions::default());
    println!("listening {}", server.addr());
    // Serve until the parent kills this process.
    loop {
        std::thread::park();
    }
}

/// `synapsor-bench backend`: the echo backend in its own process; prints its address.
fn serve_backend() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let b = synapsor_testkit::Backend::start_with(
            "bench",
            synapsor_testkit::BackendOptions {
                threads: 2,
                ..Default::default()
            },
        )
        .await;
        println!("listening {}", b.addr);
        // Serve until the parent kills this process.
        std::future::pending::<()>().await;
        drop(b);
    });
    Ok(())
}
