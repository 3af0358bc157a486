//! Run with `cargo bench --bench per_call`.
//!
//! The gateway's own per-call work, without the network: the request head in (`grpc-timeout`
//! parsed, routed), an endpoint picked by each balancer, a stream slot leased from a pool with a
//! live HTTP/2 connection (to a real backend on 127.0.0.1), and the upstream head built. A
//! regression here shows without a load test; docs/BENCHMARKS.md has the figures.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use synapsor::bench::upstream_request;
use synapsor::bench::Router;
use synapsor::bench::UpstreamGroup;
use synapsor::config;
use synapsor::grpc;

fn head() -> http::request::Parts {
    let (parts, ()) = Request::post("http://gw.local/billing.v1.Invoices/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "2S")
        .header("grpc-accept-encoding", "identity,deflate,gzip")
        .header("user-agent", "grpc-go/1.70.0")
        .header("x-tenant", "gold")
        .header("x-request-id", "6f1c2a7e-55b1-4c8e-9d57-0a1b2c3d4e5f")
        .header("authorization", "Bearer abc.def.ghi")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

fn upstream_yaml(balance: &str, endpoints: &[String]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "listeners:\n  - name: l\n    listen: 127.0.0.1:0\n    upstream: u\n    routes:\n      - {{ path_prefix: /other.v1., upstream: u }}\n      - {{ metadata: {{ name: x-tenant, value: gold }}, upstream: u }}\n\
         upstreams:\n  - name: u\n    balance: {balance}\n    endpoints: [ {} ]\n",
        eps.join(", ")
    )
}

fn per_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backend = rt.block_on(synapsor_testkit::Backend::start("bench"));
    let cfg = config::parse(
        &upstream_yaml("least_request", &[backend.addr.to_string()]),
        Path::new("bench.yaml"),
    )
    .unwrap()
    .config;
    let up = UpstreamGroup::new(&cfg.upstreams[0], Default::default(), None).instantiate();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    rt.block_on(async {
        up.start(&tokio::runtime::Handle::current(), &stop);
        while up.members().endpoints[0].pool.open_connections() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let router = Router::new(&cfg.listeners[0].routes, Some("u"), |_| up.clone());
    let parts = head();

    c.bench_function("grpc-timeout parse + encode", |b| {
        b.iter(|| {
            let d = grpc::parse_timeout(black_box(b"2S")).unwrap();
            grpc::encode_timeout(black_box(d))
        })
    });
    c.bench_function("route (path prefix miss, metadata hit)", |b| {
        b.iter(|| router.route_index(black_box(&parts)).is_some())
    });
    for policy in ["random_weight", "least_request", "round_robin", "p2c_ewma"] {
        let eps: Vec<String> = (0..4)
            .map(|i| format!("127.0.0.1:{}#{}", 1000 + i, i + 1))
            .collect();
        let cfg = config::parse(&upstream_yaml(policy, &eps), Path::new("b.yaml"))
            .unwrap()
            .config;
        let group = UpstreamGroup::new(&cfg.upstreams[0], Default::default(), None)
            .instantiate()
            .members();
        c.bench_function(&format!("pick {policy} (4 endpoints)"), |b| {
            b.iter(|| {
                group
                    .balancer
                    .pick(black_box(&group.endpoints), None, &mut rand::rng())
            })
        });
    }
    c.bench_function("pool lease + release (live h2 connection)", |b| {
        b.iter(|| {
            drop(black_box(
                up.members().endpoints[0].pool.try_acquire().unwrap(),
            ))
        })
    });
    c.bench_function("upstream head (8 metadata entries)", |b| {
        b.iter(|| {
            upstream_request(
                black_box(&parts),
                "127.0.0.1:50051",
                Some(Duration::from_secs(2)),
            )
        })
    });
    c.bench_function("whole per-call path", |b| {
        b.iter(|| {
            let budget = parts
                .headers
                .get(grpc::GRPC_TIMEOUT)
                .and_then(|v| grpc::parse_timeout(v.as_bytes()));
            let m = router
                .upstream(router.route_index(black_box(&parts)).unwrap())
                .members();
            let i = m
                .balancer
                .pick(&m.endpoints, None, &mut rand::rng())
                .unwrap();
            let lease = m.endpoints[i].pool.try_acquire().unwrap();
            let req = upstream_request(&parts, &m.endpoints[i].address, budget);
            drop(lease);
            req
        })
    });
    drop(backend);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = per_call
}
criterion_main!(benches);
