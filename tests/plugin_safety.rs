//! Plugins that misbehave — an infinite loop, a 1 GiB allocation, a panic, unbounded recursion,
//! huge or illegal header lists, a status code outside gRPC's range, an `init` that fails —
//! end only their own call, with the configured outcome, within the timeout plus a margin,
//! while other calls keep flowing; the gateway's memory returns to its baseline.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{gateway, plugin};
use synapsor_testkit::{Backend, EchoRequest};
use tonic::{Code, Request};

fn cfg(backend: &Backend, extra: &str) -> String {
    let stage = format!(
        "      - wasm: {{ name: misbehave, path: \"{}\", timeout: 200ms, memory_limit: 16MiB{extra} }}",
        plugin("misbehave").display()
    );
    support::staged_config(&backend.addr.to_string(), &stage)
}

fn asking(mode: &str) -> Request<EchoRequest> {
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-misbehave", mode.parse().unwrap());
    r
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Good calls on their own connection while `f` runs; returns how many succeeded, and fails
/// the test if any did not.
async fn while_flowing<F: std::future::Future<Output = ()>>(
    gw: &support::TestGateway,
    f: F,
) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut c = gw.client().await;
    let bg = {
        let (stop, ok) = (stop.clone(), ok.clone());
        tokio::spawn(async move {
            // Bounded: at most 100k calls or until told to stop.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                c.unary(EchoRequest::default())
                    .await
                    .expect("a well-behaved call failed while the plugin misbehaved");
                ok.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    f.await;
    stop.store(true, Ordering::Relaxed);
    bg.await.unwrap();
    ok.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_ends_only_its_call_with_unavailable() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b, "")).await;
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.expect("warm");
    let cases = [
        ("loop", "timeout"),
        ("alloc", "memory"),
        ("panic", "trap"),
        ("recurse", "trap"),
        ("huge-headers", "invalid"),
        ("illegal-header", "invalid"),
        ("pseudo-header", "invalid"),
        ("bad-code", "invalid"),
    ];
    let mut flowed_total = 0;
    for (mode, kind) in cases {
        let mut bad = gw.client().await;
        let flowed = while_flowing(&gw, async {
            let t = Instant::now();
            let st = bad.unary(asking(mode)).await.unwrap_err();
            assert_eq!(st.code(), Code::Unavailable, "{mode}: {st:?}");
            assert_eq!(
                st.message(),
                format!("plugin misbehave failed: {kind}"),
                "{mode}"
            );
            // The timeout is 200 ms; the bound only catches a hang.
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{mode} took {:?}",
                t.elapsed()
            );
        })
        .await;
        flowed_total += flowed;
        if mode == "loop" {
            assert!(flowed > 0, "calls kept flowing during the 200 ms spin");
        }
        // The same connection goes on working.
        bad.unary(EchoRequest::default())
            .await
            .unwrap_or_else(|e| panic!("after {mode}: {e:?}"));
    }
    assert_eq!(
        b.observed.calls(),
        1 + cases.len() as u64 + flowed_total,
        "no failed call reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_allow_lets_the_call_through() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b, ", on_error: allow")).await;
    let mut c = gw.client().await;
    for mode in ["loop", "panic", "alloc", "illegal-header"] {
        c.unary(asking(mode))
            .await
            .unwrap_or_else(|e| panic!("{mode} should be allowed: {e:?}"));
    }
    assert_eq!(b.observed.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_baseline_after_refused_allocations() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(&b, ", max_instances: 8")).await;
    let mut c = gw.client().await;
    for _ in 0..20 {
        c.unary(EchoRequest::default()).await.unwrap();
    }
    let baseline = rss_kib();
    // Each attempt grows an instance to its 16 MiB limit before the 1 GiB request is refused.
    for round in 0..40 {
        let st = c.unary(asking("alloc")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "round {round}");
    }
    for _ in 0..20 {
        c.unary(EchoRequest::default()).await.unwrap();
    }
    let after = rss_kib();
    eprintln!("RSS baseline {baseline} KiB, after {after} KiB");
    // 40 leaked instances would be 640 MiB; allow 64 MiB of allocator noise.
    assert!(
        after < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_plugin_bounds_its_instances() {
    let b = Backend::start("b").await;
    // One instance, and every call spins until its timeout: callers queue for the instance,
    // and those that wait longer than the timeout are told the plugin was busy.
    let gw = gateway(&cfg(&b, ", max_instances: 1")).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = gw.client().await;
        tasks.push(tokio::spawn(async move {
            c.unary(asking("loop")).await.unwrap_err()
        }));
    }
    let mut kinds = Vec::new();
    for t in tasks {
        let st = t.await.unwrap();
        assert_eq!(st.code(), Code::Unavailable);
        kinds.push(st.message().to_string());
    }
    assert!(
        kinds.iter().any(|m| m.ends_with("timeout")),
        "some ran: {kinds:?}"
    );
    assert!(
        kinds.iter().any(|m| m.ends_with("busy")),
        "some found no free instance: {kinds:?}"
    );
}
