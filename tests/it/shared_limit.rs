//! Rate limits shared through a real `redis-server` (Debian's package; the test starts it on a
//! free loopback port): two gateways enforce one limit jointly; with Redis killed each stage
//! falls back as configured (`local`, `deny`, `allow`); with Redis back, shared limiting
//! resumes. Redis latency and errors show in `/metrics`.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::redis::Redis;
use support::{gateway, http_get, TestGateway};
use synapsor_testkit::{Backend, EchoRequest};

fn limit(port: u16, rate: u32, extra: &str) -> String {
    format!(
        "      - rate_limit: {{ rate: {rate}, per: 1s, key: \"metadata:x-tenant\", backend: {{ redis: \"redis://127.0.0.1:{port}/0\", key_prefix: \"test:\" }}{extra} }}\n"
    )
}

fn cfg(backend: &Backend, listeners: &[(&str, String)]) -> String {
    let mut out = String::from("admin: { listen: 127.0.0.1:0 }\nlisteners:\n");
    for (name, stages) in listeners {
        out.push_str(&format!(
            "  - name: {name}\n    listen: 127.0.0.1:0\n    upstream: u\n    interceptors:\n{stages}"
        ));
    }
    out.push_str(&format!(
        "upstreams:\n  - {{ name: u, endpoints: [ \"{}\" ] }}\n",
        backend.addr
    ));
    out
}

/// Calls with tenant `t` on listener `addr`; returns the gRPC code of each.
async fn call(addr: SocketAddr, tenant: &str) -> tonic::Code {
    let mut c = synapsor_testkit::client(addr).await;
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut()
        .insert("x-tenant", tenant.parse().unwrap());
    match c.unary(req).await {
        Ok(_) => tonic::Code::Ok,
        Err(st) => st.code(),
    }
}

/// How many of `n` calls were admitted, and the other codes seen.
async fn admitted(addrs: &[SocketAddr], tenant: &str, n: usize) -> (usize, Vec<tonic::Code>) {
    let mut clients = Vec::new();
    for a in addrs {
        clients.push(synapsor_testkit::client(*a).await);
    }
    let (mut ok, mut other) = (0, Vec::new());
    let k = clients.len();
    for i in 0..n {
        let mut req = tonic::Request::new(EchoRequest::default());
        req.metadata_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        match clients[i % k].unary(req).await {
            Ok(_) => ok += 1,
            Err(st) => other.push(st.code()),
        }
    }
    (ok, other)
}

async fn backend_ok(gw: &TestGateway) -> u64 {
    let (_, m) = http_get(gw.admin.unwrap(), "/metrics").await;
    m.lines()
        .filter(|l| {
            l.starts_with("synapsor_rate_limit_backend_requests_total")
                && l.contains("result=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the gateway's stage answers from Redis (it connects in the background).
async fn until_connected(gw: &TestGateway, addr: SocketAddr) {
    let t = Instant::now();
    while backend_ok(gw).await == 0 {
        assert!(t.elapsed() < Duration::from_secs(15), "never reached redis");
        call(addr, "warm-up").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_enforce_one_limit_together() {
    let redis = Redis::start(support::free_port().port()).await;
    let b = Backend::start("b").await;
    let config = cfg(&b, &[("l", limit(redis.port, 20, ""))]);
    let (g1, g2) = (gateway(&config).await, gateway(&config).await);
    until_connected(&g1, g1.addr).await;
    until_connected(&g2, g2.addr).await;
    let t = Instant::now();
    let (ok, other) = admitted(&[g1.addr, g2.addr], "shared", 60).await;
    let secs = t.elapsed().as_secs_f64();
    // The burst (20) plus what 20/s replenishes while the 60 calls run, plus one: the stated
    // tolerance. Each gateway alone would have admitted 20.
    let most = 20 + (20.0 * secs).ceil() as usize + 1;
    eprintln!("two gateways admitted {ok} of 60 calls in {secs:.3}s (at most {most})");
    assert!((20..=most).contains(&ok), "{ok} admitted, at most {most}");
    assert!(
        other.iter().all(|c| *c == tonic::Code::ResourceExhausted),
        "{other:?}"
    );
    assert!(backend_ok(&g1).await > 0 && backend_ok(&g2).await > 0);
    let (_, m) = http_get(g1.admin.unwrap(), "/metrics").await;
    assert!(
        m.contains("synapsor_rate_limit_backend_seconds_count{stage=\"l:0\""),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_as_configured_and_sharing_resumes_when_it_is_back() {
    let port = support::free_port().port();
    let mut redis = Redis::start(port).await;
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b,
        &[
            ("local", limit(port, 5, ", on_backend_error: local")),
            ("deny", limit(port, 5, ", on_backend_error: deny")),
            ("allow", limit(port, 5, ", on_backend_error: allow")),
        ],
    ))
    .await;
    let addr = |name: &str| gw.listeners.iter().find(|(n, _)| n == name).unwrap().1;
    for l in ["local", "deny", "allow"] {
        until_connected(&gw, addr(l)).await;
    }
    // Shared: the bucket of 5 holds whichever listener asks (they share a prefix and key).
    let (ok, _) = admitted(&[addr("allow")], "t1", 10).await;
    assert!((5..=6).contains(&ok), "{ok}");

    redis.kill();
    // Bounded: a call that meets the dead store must not hang.
    let t = Instant::now();
    let (ok, other) = admitted(&[addr("allow")], "t2", 20).await;
    assert_eq!((ok, other.len()), (20, 0), "allow admits everything");
    let (ok, other) = admitted(&[addr("deny")], "t2", 5).await;
    assert_eq!(ok, 0);
    assert!(
        other.iter().all(|c| *c == tonic::Code::Unavailable),
        "{other:?}"
    );
    let (ok, other) = admitted(&[addr("local")], "t2", 10).await;
    assert!(
        (5..=6).contains(&ok),
        "local: this gateway's own bucket of 5: {ok}"
    );
    assert!(
        other.iter().all(|c| *c == tonic::Code::ResourceExhausted),
        "{other:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "calls hung on a dead store"
    );
    let (_, m) = http_get(gw.admin.unwrap(), "/metrics").await;
    assert!(
        m.lines()
            .any(|l| l.contains("result=\"error\"") && !l.ends_with(" 0")),
        "errors counted: {m}"
    );

    // Back on the same port (empty): shared limiting resumes on the allow listener, whose
    // fallback would admit everything.
    let _redis = Redis::start(port).await;
    let t = Instant::now();
    loop {
        let (ok, _) = admitted(&[addr("allow")], "t3", 10).await;
        if ok < 10 {
            assert!((5..=6).contains(&ok), "{ok}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "shared limiting never resumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "shared limiting resumed {:?} after redis came back",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_allowance_asks_redis_once_per_batch() {
    let redis = Redis::start(support::free_port().port()).await;
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b,
        &[("l", {
            let s = limit(redis.port, 1000, "");
            s.replace(
                "key_prefix: \"test:\"",
                "key_prefix: \"batch:\", local_allowance: 10",
            )
        })],
    ))
    .await;
    until_connected(&gw, gw.addr).await;
    let before = backend_ok(&gw).await;
    let (ok, _) = admitted(&[gw.addr], "batched", 50).await;
    assert_eq!(ok, 50);
    let asked = backend_ok(&gw).await - before;
    // 50 calls in batches of 10 per key: 5 round trips, or a few more when calls on both
    // workers each take a batch.
    assert!(
        (5..=10).contains(&asked),
        "{asked} requests to redis for 50 calls"
    );
}

#[test]
fn bad_backend_settings_name_the_field() {
    let parse = |stage: &str| {
        let yaml = format!(
            "listeners:\n  - name: l\n    listen: 127.0.0.1:0\n    upstream: u\n    interceptors:\n      - rate_limit: {stage}\nupstreams:\n  - {{ name: u, endpoints: [ \"127.0.0.1:1\" ] }}\n"
        );
        synapsor::config::parse(&yaml, std::path::Path::new("r.yaml")).unwrap_err()
    };
    let e = parse("{ rate: 5, backend: { redis: \"http://x\" } }");
    assert_eq!(
        e.field,
        "listeners[0].interceptors[0].rate_limit.backend.redis"
    );
    let e =
        parse("{ rate: 5, backend: { redis: \"redis://127.0.0.1:6379\", local_allowance: 9 } }");
    assert_eq!(
        e.field,
        "listeners[0].interceptors[0].rate_limit.backend.local_allowance"
    );
    let e = parse("{ rate: 5, on_backend_error: maybe }");
    assert!(e.message.contains("maybe"), "{e}");
}
