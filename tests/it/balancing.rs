//! Balancers over real backends: weights honoured within statistical bounds, smooth round robin
//! exact, and least_request steering away from an endpoint that holds long streams.

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use support::{config, gateway, wait_until};
use synapsor_testkit::{Backend, EchoRequest};
use tokio_stream::StreamExt;

async fn spread(gw: &support::TestGateway, calls: usize) -> HashMap<String, usize> {
    let mut c = gw.client().await;
    let mut counts = HashMap::new();
    for _ in 0..calls {
        let r = c.unary(EchoRequest::default()).await.unwrap().into_inner();
        *counts.entry(r.backend).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_weight_honours_weights() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let eps: Vec<String> = bs
        .iter()
        .zip([1, 2, 5])
        .map(|(b, w)| format!("{}#{w}", b.addr))
        .collect();
    let gw = gateway(&config(&eps, "    balance: random_weight\n")).await;
    let n = 4000;
    let counts = spread(&gw, n).await;
    // Expected shares 1/8, 2/8, 5/8. The binomial standard deviation is below 0.008 at n=4000,
    // so a 0.04 band is five of them: this fails only if weights are ignored.
    for (name, want) in [("a", 0.125), ("b", 0.25), ("c", 0.625)] {
        let got = counts.get(name).copied().unwrap_or(0) as f64 / n as f64;
        assert!(
            (got - want).abs() < 0.04,
            "{name}: {got:.3} vs {want} ({counts:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact_over_whole_periods() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let eps: Vec<String> = bs
        .iter()
        .zip([3, 1, 1])
        .map(|(b, w)| format!("{}#{w}", b.addr))
        .collect();
    let gw = gateway(&config(&eps, "    balance: round_robin\n")).await;
    let counts = spread(&gw, 500).await;
    assert_eq!(counts["a"], 300, "{counts:?}");
    assert_eq!(counts["b"], 100, "{counts:?}");
    assert_eq!(counts["c"], 100, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_steers_away_from_long_streams() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let eps = vec![a.addr.to_string(), b.addr.to_string()];
    let gw = gateway(&config(&eps, "    balance: least_request\n")).await;
    let mut c = gw.client().await;
    let up = gw.running.upstream("u").unwrap();
    let load = |i: usize| up.members().endpoints[i].in_flight.load(Ordering::Relaxed);
    // Six long streams: an open stream counts until it ends, so they spread 3/3.
    let mut streams = Vec::new();
    for _ in 0..6 {
        let mut s = c
            .server_stream(EchoRequest {
                reply_count: 10_000,
                delay_ms: 50,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first = s.next().await.unwrap().unwrap();
        streams.push((first.backend, s));
    }
    assert_eq!((load(0), load(1)), (3, 3), "long streams spread evenly");
    assert_eq!((a.observed.in_flight(), b.observed.in_flight()), (3, 3));
    // End b's streams: a still holds three, so every new call must go to b.
    streams.retain(|(backend, _)| backend == "a");
    wait_until(10, "b's streams to close", || load(1) == 0).await;
    assert_eq!(load(0), 3);
    let counts = spread(&gw, 50).await;
    assert_eq!(counts.get("b").copied(), Some(50), "{counts:?}");
    // Once a's streams end, a takes calls again.
    streams.clear();
    wait_until(10, "a's streams to close", || load(0) == 0).await;
    let counts = spread(&gw, 200).await;
    assert!(counts.get("a").copied().unwrap_or(0) > 50, "{counts:?}");
}

/// Field fault: with weights 2:1 and calls one at a time, `least_request` sent 600 of 600 calls
/// to the heavier endpoint ((in-flight + 1) / weight made it the least loaded every time).
/// Idle endpoints now tie and are taken in smooth weighted order: 2:1 at concurrency 1, as
/// `round_robin` and `random_weight` give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hold_at_concurrency_one() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let eps = vec![format!("{}#2", a.addr), format!("{}#1", b.addr)];
    for policy in ["least_request", "round_robin", "random_weight"] {
        let gw = gateway(&config(&eps, &format!("    balance: {policy}\n"))).await;
        let counts = spread(&gw, 600).await;
        let share = counts.get("a").copied().unwrap_or(0) as f64 / 600.0;
        // random_weight: the binomial sd is 0.019 at n=600; 0.08 is four of them.
        let band = if policy == "random_weight" {
            0.08
        } else {
            0.03
        };
        assert!(
            (share - 2.0 / 3.0).abs() < band,
            "{policy}: {share:.3} of calls to the weight-2 endpoint ({counts:?})"
        );
    }
}
