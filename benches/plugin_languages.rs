//! Run with `cargo bench --bench plugin_languages` (it runs `plugins/build.sh` first).
//!
//! What a plugin costs by the language it is written in: the same `header-rewrite` example
//! built from Rust, Python (componentize-py) and JavaScript (componentize-js), and the C
//! `method-deny` (the one C example). For each: the component's size, the time to compile it,
//! the linear memory of a new instance after `init`, and the cost of one `on-request` call with
//! `isolation: reuse` and `per_request` (a fresh instance per call, `init` included), in
//! process, the request carrying 8 metadata entries; the difference of the two is the time to
//! create an instance and run `init`.
//! Medians of rounds; docs/BENCHMARKS.md has the figures.

#![allow(missing_docs)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synapsor::config::WasmConfig;
use synapsor::plugin::bindings::RequestInfo;
use synapsor::plugin::host::CallCtx;
use synapsor::plugin::Plugin;

const CONFIG: &str = "{ set: { x-env: prod }, append: { x-via: synapsor }, remove: [x-debug] }";

fn info() -> RequestInfo {
    let md = [
        ("grpc-accept-encoding", "identity,deflate,gzip"),
        ("user-agent", "grpc-go/1.70.0"),
        ("x-tenant", "gold"),
        ("x-request-id", "6f1c2a7e-55b1-4c8e-9d57-0a1b2c3d4e5f"),
        ("authorization", "Bearer abc.def.ghi"),
        ("x-debug", "1"),
        ("x-via", "client"),
        ("x-env", "dev"),
    ];
    support::request_info(&md)
}

fn config(file: &Path, isolation: &str, config: &str) -> WasmConfig {
    let yaml = format!(
        "{{ name: bench-{isolation}, path: \"{}\", isolation: {isolation}, timeout: 1s, \
         memory_limit: 64MiB, max_instances: 4, config: {config} }}",
        file.display()
    );
    let mut cfg: WasmConfig = serde_yaml::from_str(&yaml).unwrap();
    cfg.watch = false;
    cfg
}

/// The median time of one `on-request` call over `rounds` rounds of `calls` calls.
fn per_call(rt: &tokio::runtime::Runtime, plugin: &Plugin, rounds: usize, calls: u32) -> Duration {
    let info = info();
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let version = plugin.current.load_full();
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..calls {
                    let ctx = Arc::new(CallCtx::new(None));
                    let a = version.on_request(ctx, info.clone()).await.unwrap();
                    std::hint::black_box(a);
                }
                t.elapsed() / calls
            })
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

fn main() {
    let dir = support::built_plugins();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| language | component | compile | instance memory | new instance + init | reuse, per call | per_request, per call |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (lang, file, cfg) in [
        ("Rust", "header_rewrite", CONFIG),
        ("C", "method_deny", "{ deny_prefix: /x.Y/Z }"),
        ("Python", "header_rewrite_py", CONFIG),
        ("JavaScript", "header_rewrite_js", CONFIG),
    ] {
        let path = dir.join(format!("{file}.wasm"));
        let size = std::fs::metadata(&path).unwrap().len();
        let d = synapsor::plugin::describe(&config(&path, "reuse", cfg)).unwrap();
        let reuse = Plugin::load(&config(&path, "reuse", cfg)).unwrap();
        per_call(&rt, &reuse, 3, 200); // warm
        let reuse = per_call(&rt, &reuse, 9, 2000);
        let fresh = Plugin::load(&config(&path, "per_request", cfg)).unwrap();
        let fresh = per_call(&rt, &fresh, 9, 30);
        println!(
            "| {lang} | {:.2} MB | {:.2} s | {:.1} MiB | {:.2} ms | {:.1} µs | {:.2} ms |",
            size as f64 / 1e6,
            d.compile.as_secs_f64(),
            d.memory as f64 / f64::from(1 << 20),
            fresh.saturating_sub(reuse).as_secs_f64() * 1e3,
            reuse.as_secs_f64() * 1e6,
            fresh.as_secs_f64() * 1e3,
        );
    }
}
