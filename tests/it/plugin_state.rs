//! Plugin shared state (contract 0.2.1) over real sockets, driven through
//! `plugins/testing/state-probe`: one store for all of a plugin's instances (a fresh instance
//! per call shows it), TTL expiry, compare-and-swap races between instances on both workers,
//! the bounds, and the Redis-backed store shared by two gateways against a real
//! `redis-server`, with Redis killed → `on_redis_error`.

use std::time::Duration;

use crate::plugin_callouts::{config, result};
use crate::support;

use support::redis::Redis;
use support::{gateway, http_get, wasm_stage as wasm, TestGateway};
use synapsor_testkit::Backend;

async fn state_gateway(b: &Backend, extra: &str) -> TestGateway {
    let stage = wasm("st", "state_probe", extra);
    gateway(&config(b, &stage, &[])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_shared_by_every_instance_and_values_expire() {
    let b = Backend::start("b").await;
    // A fresh instance for every call: whatever one sets, the next can only see through the
    // shared store.
    let gw = state_gateway(&b, ", isolation: per_request").await;
    let mut c = gw.client().await;
    let set = |k, v, ttl| {
        vec![
            ("x-op", "set"),
            ("x-key", k),
            ("x-value", v),
            ("x-ttl-ms", ttl),
        ]
    };
    assert_eq!(result(&mut c, &set("a", "1", "300")).await, "ok");
    assert_eq!(
        result(&mut c, &[("x-op", "get"), ("x-key", "a")]).await,
        "ok:1"
    );
    let mut forever = set("b", "2", "");
    forever.pop();
    assert_eq!(result(&mut c, &forever).await, "ok");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        result(&mut c, &[("x-op", "get"), ("x-key", "a")]).await,
        "none",
        "expired"
    );
    assert_eq!(
        result(&mut c, &[("x-op", "get"), ("x-key", "b")]).await,
        "ok:2"
    );
    assert_eq!(
        result(&mut c, &[("x-op", "delete"), ("x-key", "b")]).await,
        "true"
    );
    assert_eq!(
        result(&mut c, &[("x-op", "delete"), ("x-key", "b")]).await,
        "false"
    );
    let cas = |e: Option<&'static str>, v| {
        let mut md = vec![("x-op", "cas"), ("x-key", "c"), ("x-value", v)];
        md.extend(e.map(|e| ("x-expected", e)));
        md
    };
    assert_eq!(result(&mut c, &cas(None, "1")).await, "true");
    assert_eq!(
        result(&mut c, &cas(None, "1")).await,
        "false",
        "not absent any more"
    );
    assert_eq!(result(&mut c, &cas(Some("1"), "2")).await, "true");
    assert_eq!(result(&mut c, &cas(Some("1"), "3")).await, "false");
    // Plain calls go on.
    c.unary(synapsor_testkit::EchoRequest::default())
        .await
        .expect("a call without x-op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_races_between_instances_lose_no_increment() {
    let b = Backend::start("b").await;
    let gw = state_gateway(&b, ", max_instances: 8").await;
    let clients = 8;
    let each = 25;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                // A connection each: the gateway deals them to both workers.
                let mut c = synapsor_testkit::client(addr).await;
                let mut retries = 0u64;
                for _ in 0..each {
                    let r = result(&mut c, &[("x-op", "incr"), ("x-key", "n")]).await;
                    let parts: Vec<_> = r.split(':').collect();
                    assert_eq!(parts[0], "ok", "{r}");
                    retries += parts[2].parse::<u64>().unwrap();
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let mut c = gw.client().await;
    let total = result(&mut c, &[("x-op", "get"), ("x-key", "n")]).await;
    assert_eq!(
        total,
        format!("ok:{}", clients * each),
        "retries: {retries}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_bounded_and_refusals_are_counted() {
    let b = Backend::start("b").await;
    let gw = state_gateway(
        &b,
        ", state: { max_entries: 3, max_bytes: 4KiB, max_value_size: 1KiB }",
    )
    .await;
    let mut c = gw.client().await;
    let big = "x".repeat(1025);
    let r = result(
        &mut c,
        &[("x-op", "set"), ("x-key", "k"), ("x-value", &big)],
    )
    .await;
    assert!(r.starts_with("err:too-large"), "{r}");
    for k in ["a", "b", "c"] {
        let r = result(&mut c, &[("x-op", "set"), ("x-key", k), ("x-value", "v")]).await;
        assert_eq!(r, "ok");
    }
    let r = result(&mut c, &[("x-op", "set"), ("x-key", "d"), ("x-value", "v")]).await;
    assert_eq!(r, "err:full");
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    for line in [
        "synapsor_plugin_state_refused_total{plugin=\"st\",reason=\"too_large\"} 1",
        "synapsor_plugin_state_refused_total{plugin=\"st\",reason=\"full\"} 1",
        "synapsor_plugin_state_entries{plugin=\"st\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

fn redis_stage(port: u16, fallback: &str) -> String {
    format!(
        ", state: {{ redis: {{ url: \"redis://127.0.0.1:{port}/0\", timeout: 200ms }}, on_redis_error: {fallback} }}"
    )
}

/// Waits until a gateway's store answers from Redis (its connections open in the background).
async fn until_connected(c: &mut synapsor_testkit::EchoClient<tonic::transport::Channel>) {
    let t = std::time::Instant::now();
    loop {
        let r = result(c, &[("x-op", "set"), ("x-key", "ping"), ("x-value", "1")]).await;
        if r == "ok" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never connected: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backed_state_is_shared_by_two_gateways_and_falls_back_as_configured() {
    let mut redis = Redis::start(support::free_port().port()).await;
    let b = Backend::start("b").await;
    let one = state_gateway(&b, &redis_stage(redis.port, "local")).await;
    let two = gateway(&config(
        &b,
        &wasm("st", "state_probe", &redis_stage(redis.port, "fail")),
        &[],
    ))
    .await;
    let (mut c1, mut c2) = (one.client().await, two.client().await);
    until_connected(&mut c1).await;
    until_connected(&mut c2).await;
    let set = [
        ("x-op", "set"),
        ("x-key", "shared"),
        ("x-value", "from-one"),
        ("x-ttl-ms", "60000"),
    ];
    assert_eq!(result(&mut c1, &set).await, "ok");
    let get = [("x-op", "get"), ("x-key", "shared")];
    assert_eq!(
        result(&mut c2, &get).await,
        "ok:from-one",
        "one store for both"
    );
    // Both gateways increment one counter: Redis's compare-and-swap script is atomic.
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        assert!(result(c, &[("x-op", "incr"), ("x-key", "n")])
            .await
            .starts_with("ok:"));
    }
    assert_eq!(
        result(&mut c1, &[("x-op", "get"), ("x-key", "n")]).await,
        "ok:10"
    );

    redis.kill();
    // `local`: this gateway's own store meanwhile; `fail`: the plugin is told.
    let set_local = [("x-op", "set"), ("x-key", "k"), ("x-value", "mine")];
    assert_eq!(result(&mut c1, &set_local).await, "ok");
    assert_eq!(
        result(&mut c1, &[("x-op", "get"), ("x-key", "k")]).await,
        "ok:mine"
    );
    let r = result(&mut c2, &[("x-op", "get"), ("x-key", "k")]).await;
    assert!(r.starts_with("err:unavailable"), "{r}");
    let (_, metrics) = http_get(two.admin.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("synapsor_plugin_state_redis_errors_total{plugin=\"st\"}"),
        "{metrics}"
    );
}
