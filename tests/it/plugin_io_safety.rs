//! Plugins that abuse callouts and state — calling out in a loop, to a black-hole upstream, to
//! a group they may not use; filling state with huge values or a million keys — are each
//! bounded, fail only their own calls (ABORTED with what the plugin saw, from
//! `plugins/testing/misbehave`), and leave other calls flowing and the gateway's memory bounded.

use std::time::{Duration, Instant};

use crate::plugin_callouts::config;
use crate::support;

use support::{gateway, http_get, plugin, while_flowing};
use synapsor_testkit::{Backend, EchoRequest};
use tonic::{Code, Request};

fn stage(extra: &str) -> String {
    format!(
        "      - wasm: {{ name: misbehave, path: \"{}\", timeout: 200ms, memory_limit: 32MiB, config: {{ callout_group: u }}{extra} }}",
        plugin("misbehave").display()
    )
}

/// The ABORTED message of a call asking the plugin to misbehave as `mode`.
async fn misbehave(addr: std::net::SocketAddr, mode: &str, md: &[(&'static str, &str)]) -> String {
    let mut c = synapsor_testkit::client(addr).await;
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("x-misbehave", mode.parse().unwrap());
    for (k, v) in md {
        r.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let st = c.unary(r).await.expect_err("the plugin ends the call");
    assert_eq!(st.code(), Code::Aborted, "{mode}: {st:?}");
    st.message().to_string()
}

/// An HTTP/2 server that takes every stream and never answers (it lets go after 10 s).
async fn silent() -> std::net::SocketAddr {
    let (addr, _) = support::h2_upstream(|respond, _| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(respond);
    })
    .await;
    addr
}

/// A TCP listener that accepts connections and never answers a byte.
async fn black_hole() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: the test makes a handful of connections.
        while held.len() < 64 {
            match l.accept().await {
                Ok((s, _)) => held.push(s),
                Err(_) => return,
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callouts_in_a_loop_to_a_black_hole_or_a_forbidden_group_are_bounded() {
    let b = Backend::start("b").await;
    let groups = [
        ("silent", silent().await.to_string()),
        ("hole", black_hole().await.to_string()),
    ];
    let callouts =
        ", callouts: { groups: [u, silent, hole], timeout: 400ms, max_per_hook: 3, max_in_flight: 4 }";
    let gw = gateway(&config(&b, &stage(callouts), &groups)).await;
    let addr = gw.addr;
    let flowed = while_flowing(&gw, async move {
        let looped = misbehave(addr, "callout-loop", &[]).await;
        assert!(looped.starts_with("after 3 calls: limited"), "{looped}");
        let no = misbehave(addr, "callout-blackhole", &[("x-group", "secret")]).await;
        assert!(no.starts_with("not-allowed"), "{no}");
        // A group whose endpoint accepts connections and never speaks: the callout waits its
        // 400 ms, or fails at once once the pool has given the endpoint up.
        let started = Instant::now();
        let hole = misbehave(addr, "callout-blackhole", &[("x-group", "hole")]).await;
        assert!(
            hole == "timeout" || hole.starts_with("unavailable"),
            "{hole}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // Ten calls at once to a service that takes them and never answers: four wait their
        // 400 ms (longer than the hook's 200 ms CPU timeout: waiting is not running), six are
        // refused at once.
        let started = Instant::now();
        let holes: Vec<_> = (0..10)
            .map(|_| {
                tokio::spawn(misbehave(
                    addr,
                    "callout-blackhole",
                    &[("x-group", "silent")],
                ))
            })
            .collect();
        let mut answers = Vec::new();
        for h in holes {
            answers.push(h.await.unwrap());
        }
        let took = started.elapsed();
        let timeouts = answers.iter().filter(|a| a.starts_with("timeout")).count();
        let limited = answers.iter().filter(|a| a.starts_with("limited")).count();
        assert_eq!((timeouts, limited), (4, 6), "{answers:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    })
    .await;
    assert!(flowed > 10, "plain calls flowed meanwhile: {flowed}");
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    let line = "synapsor_plugin_callouts_total{plugin=\"misbehave\",target=\"silent\",result=\"timeout\"} 4";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_filled_with_huge_values_or_a_million_keys_stays_within_its_bounds() {
    let b = Backend::start("b").await;
    let bounds = ", state: { max_entries: 5000, max_bytes: 8MiB, max_value_size: 4MiB }";
    let gw = gateway(&config(&b, &stage(bounds), &[])).await;
    let addr = gw.addr;
    while_flowing(&gw, async move {
        let huge = misbehave(addr, "state-huge", &[]).await;
        // 1 + 2 + 4 MiB fit in 8 MiB... 1 + 2 fit, 3 more would be 6, 4 more 10: full, and
        // 5 MiB is over max_value_size anyway.
        assert!(
            huge.starts_with("after 3 sets: full") || huge.starts_with("after 2 sets: full"),
            "{huge}"
        );
        let again = misbehave(addr, "state-huge", &[]).await;
        assert!(
            again.starts_with("after 0 sets: full") || again.contains("after 1 sets: full"),
            "{again}"
        );
        let keys = misbehave(addr, "state-keys", &[]).await;
        assert!(keys.contains("keys: full"), "{keys}");
    })
    .await;
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("synapsor_plugin_state_bytes{plugin=\"misbehave\"} "))
        .expect("the state's bytes are shown")
        .parse()
        .unwrap();
    assert!(bytes <= 8 << 20, "{bytes} bytes held, over max_bytes");
    let entries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("synapsor_plugin_state_entries{plugin=\"misbehave\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(entries <= 5000, "{entries}");
    assert!(metrics
        .contains("synapsor_plugin_state_refused_total{plugin=\"misbehave\",reason=\"full\"}"));
}
