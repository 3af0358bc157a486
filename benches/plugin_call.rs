//! Run with `cargo bench --bench plugin_call` (it builds `plugins/` first when needed).
//!
//! The in-process cost of one plugin hook call: the `misbehave` test plugin in its well-behaved
//! mode (it reads all 8 metadata entries of the call and lets it through), with
//! `isolation: reuse` (an instance from the pool) and `per_request` (a fresh instance, `init`
//! included). Each sample runs its calls inside one `block_on`, so the runtime's entry cost is
//! not counted. docs/BENCHMARKS.md has the figures.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use synapsor::config::{Isolation, WasmConfig};
use synapsor::plugin::bindings::{Message, MessageAction, RequestInfo};
use synapsor::plugin::compat::Direction;
use synapsor::plugin::host::CallCtx;
use synapsor::plugin::Plugin;

fn component() -> PathBuf {
    support::built_plugins().join("misbehave.wasm")
}

fn info() -> RequestInfo {
    let md = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "2S"),
        ("grpc-accept-encoding", "identity,deflate,gzip"),
        ("user-agent", "grpc-go/1.70.0"),
        ("x-tenant", "gold"),
        ("x-request-id", "6f1c2a7e-55b1-4c8e-9d57-0a1b2c3d4e5f"),
        ("authorization", "Bearer abc.def.ghi"),
    ];
    support::request_info(&md)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = info();
    let mut g = c.benchmark_group("plugin_on_request");
    for (label, isolation) in [
        ("reuse", Isolation::Reuse),
        ("per_request", Isolation::PerRequest),
    ] {
        let yaml = format!(
            "{{ name: bench-{label}, path: \"{}\", isolation: {label}, timeout: 1s }}",
            component().display()
        );
        let mut cfg: WasmConfig = serde_yaml::from_str(&yaml).unwrap();
        cfg.isolation = isolation;
        cfg.watch = false;
        let plugin = Plugin::load(&cfg).unwrap();
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let version = plugin.current.load_full();
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let ctx = std::sync::Arc::new(CallCtx::new(None));
                        let a = version.on_request(ctx, info.clone()).await.unwrap();
                        std::hint::black_box(a);
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
    on_message(c, &rt);
    eprintln!(
        "hook calls moved to the plugin threads: {}",
        synapsor::plugin::offload::moved()
    );
}

/// A `continue` message hook on a reused instance, for a 100 B message: what every message of
/// a call through a message plugin pays in the hook call itself (framing aside).
fn on_message(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let yaml = format!(
        "{{ name: bench-msg, path: \"{}\", isolation: reuse, timeout: 1s, config: {{ messages: true }} }}",
        component().display()
    );
    let mut cfg: WasmConfig = serde_yaml::from_str(&yaml).unwrap();
    cfg.watch = false;
    let plugin = Plugin::load(&cfg).unwrap();
    let mut g = c.benchmark_group("plugin_on_message");
    g.bench_function("reuse_100b_continue", |b| {
        b.iter_custom(|iters| {
            let version = plugin.current.load_full();
            let ctx = std::sync::Arc::new(CallCtx::new(None));
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    let m = Message {
                        call_id: 1,
                        method: "/billing.v1.Invoices/Stream".into(),
                        index: i,
                        compressed: false,
                        data: vec![0x42; 100],
                    };
                    let a = version.on_message(ctx.clone(), Direction::Request, m).await;
                    assert!(matches!(a, Ok(MessageAction::Continue)));
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
