//! `synapsor-bench callout`: what a plugin's callout costs (issue 16). In one run, rotating the
//! order each round, small unary calls (100 B) at 1 and at 64 concurrent streams go:
//! directly to the echo backend; through the plain gateway; through the `ext-authz` example with
//! its decision cached (one state lookup per call); and through `ext-authz` with no cache (one
//! callout to the authorization service per call). The same `Check` call made directly by a
//! client to the authorization service is measured alongside, so the callout's added latency
//! and gateway CPU can be set against it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use synapsor_testkit::authz::authz_client;
use synapsor_testkit::pb::{CheckRequest, Header};
use synapsor_testkit::{EchoClient, EchoRequest};
use tonic::transport::Channel;

use crate::load::Outcome;
use crate::targets::{self, Chain, Target};

/// The bearer token every call carries (the authorization service allows `allow…`).
pub const TOKEN: &str = "Bearer allow-bench";

const CONNECTIONS: usize = 4;

/// One measured path.
struct Leg {
    name: &'static str,
    target: Option<usize>,
    check: bool,
}

/// Runs the comparison and prints a table of medians over `rounds`.
pub fn run(gateway: &Path, dir: &Path, rounds: usize, secs: u64) -> anyhow::Result<()> {
    let backend = targets::backend()?;
    let authz = targets::child_server("authz")?;
    let ts: Vec<Target> = [
        Chain::Plain,
        Chain::ExtAuthz(authz.addr, true),
        Chain::ExtAuthz(authz.addr, false),
    ]
    .into_iter()
    .map(|c| targets::synapsor(gateway, backend.addr, dir, 0, c))
    .collect::<anyhow::Result<_>>()?;
    let paths = [
        Leg {
            name: "direct",
            target: None,
            check: false,
        },
        Leg {
            name: "synapsor",
            target: Some(0),
            check: false,
        },
        Leg {
            name: "ext-authz cached",
            target: Some(1),
            check: false,
        },
        Leg {
            name: "ext-authz no cache",
            target: Some(2),
            check: false,
        },
        Leg {
            name: "Check, direct",
            target: None,
            check: true,
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let duration = Duration::from_secs(secs);
    let mut results: Vec<Vec<Row>> = (0..paths.len() * 2).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (ci, &streams) in [1usize, 64].iter().enumerate() {
            for k in 0..paths.len() {
                let pi = (k + round) % paths.len();
                let p = &paths[pi];
                let (addr, measured) = match (p.target, p.check) {
                    (Some(t), _) => (ts[t].addr, Some(&ts[t])),
                    (None, false) => (backend.addr, None),
                    (None, true) => (authz.addr, None),
                };
                let row = rt.block_on(one(addr, measured, p.check, streams, duration))?;
                eprintln!(
                    "round {} c={streams:<2} {:<20} {:>9.0} calls/s errors {}",
                    round + 1,
                    p.name,
                    row.rate,
                    row.errors
                );
                results[ci * paths.len() + pi].push(row);
            }
        }
    }
    report(&paths, &results, rounds, secs);
    Ok(())
}

/// One path's figures in one round.
struct Row {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    /// The gateway's CPU per call, in µs (NaN for a path without a gateway).
    cpu_us: f64,
}

/// Measures one path: calls at `streams` concurrency, and the CPU of the `measured` gateway.
async fn one(
    addr: SocketAddr,
    measured: Option<&Target>,
    check: bool,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let mut cpu0 = Duration::ZERO;
    let mut o = measure(addr, check, streams, duration, || {
        cpu0 = measured.map(Target::cpu).unwrap_or_default()
    })
    .await?;
    let cpu_us = measured.map_or(f64::NAN, |t| {
        t.cpu().saturating_sub(cpu0).as_secs_f64() * 1e6 / o.count.max(1) as f64
    });
    Ok(Row {
        rate: o.rate(),
        p50: f64::from(o.quantile(0.5).unwrap_or(0)),
        p99: f64::from(o.quantile(0.99).unwrap_or(0)),
        errors: o.errors,
        cpu_us,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(paths: &[Leg], results: &[Vec<Row>], rounds: usize, secs: u64) {
    println!("\n{rounds} rounds of {secs} s per path and concurrency; medians over rounds.\n");
    println!(
        "| streams | path | calls/s | × direct | p50 µs | p99 µs | errors | gateway CPU µs/call |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (ci, streams) in [1, 64].iter().enumerate() {
        let direct = &results[ci * paths.len()];
        for (pi, p) in paths.iter().enumerate() {
            let rows = &results[ci * paths.len() + pi];
            let ratio = median(
                rows.iter()
                    .zip(direct)
                    .map(|(r, d)| r.rate / d.rate)
                    .collect(),
            );
            let col = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
            let cpu = col(|r| r.cpu_us);
            let cpu = if cpu.is_nan() {
                "–".into()
            } else {
                format!("{cpu:.1}")
            };
            println!(
                "| {streams} | {} | {:.0} | {ratio:.2} | {:.0} | {:.0} | {} | {cpu} |",
                p.name,
                col(|r| r.rate),
                col(|r| r.p50),
                col(|r| r.p99),
                rows.iter().map(|r| r.errors).sum::<u64>(),
            );
        }
    }
}

/// `streams` concurrent loops over 4 connections, each making unary calls (Echo, or Check when
/// `check`) back to back for `duration`, after a 300 ms warm-up.
async fn measure(
    addr: SocketAddr,
    check: bool,
    streams: usize,
    duration: Duration,
    measuring: impl FnOnce(),
) -> anyhow::Result<Outcome> {
    let mut echo = Vec::new();
    let mut authz = Vec::new();
    for _ in 0..CONNECTIONS {
        if check {
            authz.push(authz_client(addr).await);
        } else {
            echo.push(synapsor_testkit::client(addr).await);
        }
    }
    let round = |d: Duration| {
        let (echo, authz) = (echo.clone(), authz.clone());
        async move {
            let deadline = Instant::now() + d;
            let tasks: Vec<_> = (0..streams)
                .map(|i| {
                    let e = echo.get(i % CONNECTIONS).cloned();
                    let a = authz.get(i % CONNECTIONS).cloned();
                    tokio::spawn(async move { calls(e, a, deadline).await })
                })
                .collect();
            let started = Instant::now();
            let mut total = Outcome::default();
            for t in tasks {
                let o = t.await.unwrap_or_default();
                total.count += o.count;
                total.errors += o.errors;
                total.latencies_us.extend(o.latencies_us);
            }
            total.elapsed = started.elapsed();
            total
        }
    };
    round(Duration::from_millis(300)).await;
    measuring();
    Ok(round(duration).await)
}

/// Calls until `deadline` (bounded: each call has a 3 s timeout).
async fn calls(
    mut echo: Option<EchoClient<Channel>>,
    mut authz: Option<synapsor_testkit::pb::authz_client::AuthzClient<Channel>>,
    deadline: Instant,
) -> Outcome {
    let mut o = Outcome::default();
    while Instant::now() < deadline {
        let t = Instant::now();
        let ok = if let Some(c) = echo.as_mut() {
            let mut r = tonic::Request::new(EchoRequest {
                payload: vec![0x42; 100],
                ..Default::default()
            });
            r.metadata_mut()
                .insert("authorization", TOKEN.parse().expect("ascii"));
            r.set_timeout(Duration::from_secs(3));
            c.unary(r).await.is_ok()
        } else if let Some(c) = authz.as_mut() {
            let mut r = tonic::Request::new(CheckRequest {
                method: "/synapsor.test.v1.Echo/Unary".into(),
                principal: String::new(),
                headers: vec![Header {
                    name: "authorization".into(),
                    value: TOKEN.into(),
                }],
            });
            r.set_timeout(Duration::from_secs(3));
            c.check(r).await.is_ok()
        } else {
            false
        };
        if ok {
            o.count += 1;
            o.latencies_us.push(t.elapsed().as_micros() as u32);
        } else {
            o.errors += 1;
        }
    }
    o
}
