//! Reloading the config while serving, against real backends over real sockets: admin
//! `POST /reload` and a change to the file apply only the difference — endpoints swapped
//! (calls in flight on a removed one finish), stages added to an open connection's next call,
//! listeners added and removed (in-flight calls on a removed one finish) — and a broken file
//! changes nothing and says where it is broken. A reload loop under load fails no call.

use crate::support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{http_get, http_post, wait_until, TestGateway};
use synapsor_testkit::{Backend, EchoRequest};

/// A config file in a fresh temp directory.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(tag: &str, yaml: &str) -> ConfigFile {
        let dir =
            std::env::temp_dir().join(format!("synapsor-reload-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = ConfigFile {
            path: dir.join("synapsor.yaml"),
        };
        f.write(yaml);
        f
    }

    fn write(&self, yaml: &str) {
        // Written in place, as an editor that truncates would.
        std::fs::write(&self.path, yaml).unwrap();
    }
}

/// Starts a gateway from the file, with reloading wired to it.
async fn start(file: &ConfigFile) -> TestGateway {
    let loaded = synapsor::config::load(&file.path).expect("valid config");
    let gw = synapsor::Gateway::bind(loaded.config).await.expect("bind");
    support::serve(gw.with_source(file.path.clone())).await
}

fn yaml(listeners: &str, upstreams: &str, extra: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nruntime: {{ workers: 2 }}\n{extra}\
         listeners:\n{listeners}upstreams:\n{upstreams}"
    )
}

fn listener(name: &str, upstream: &str, stages: &str) -> String {
    format!(
        "  - {{ name: {name}, listen: 127.0.0.1:0, upstream: {upstream}, drain_timeout: 5s{stages} }}\n"
    )
}

fn upstream(name: &str, endpoints: &[&Backend]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|b| format!("\"{}\"", b.addr))
        .collect();
    format!(
        "  - {{ name: {name}, endpoints: [ {} ] }}\n",
        eps.join(", ")
    )
}

async fn backend_of(c: &mut synapsor_testkit::EchoClient<tonic::transport::Channel>) -> String {
    c.unary(EchoRequest::default())
        .await
        .expect("call succeeds")
        .into_inner()
        .backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_swaps_endpoints_adds_stages_and_listeners_without_dropping_calls() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let file = ConfigFile::new(
        "swap",
        &yaml(&listener("l", "u", ""), &upstream("u", &[&a]), ""),
    );
    let gw = start(&file).await;
    let admin = gw.admin.unwrap();
    let mut c = gw.client().await;
    assert_eq!(backend_of(&mut c).await, "a");
    // A call in flight on a, which the reload removes.
    let mut slow = c.clone();
    let in_flight = tokio::spawn(async move {
        slow.unary(EchoRequest {
            delay_ms: 1500,
            ..Default::default()
        })
        .await
    });
    wait_until(5, "the slow call reaches a", || a.observed.in_flight() == 1).await;

    file.write(&yaml(
        &format!(
            "{}{}",
            listener(
                "l",
                "u",
                ", interceptors: [ { api_key: { keys: [ { key: key-0123456789, principal: t } ] } } ]"
            ),
            listener("l2", "v", "")
        ),
        &format!("{}{}", upstream("u", &[&b]), upstream("v", &[&a])),
        "",
    ));
    let (status, body) = http_post(admin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    for what in [
        "upstream v added",
        "upstream u changed",
        "listener l changed",
        "listener l2",
    ] {
        assert!(body.contains(what), "{what}: {body}");
    }
    // The call on the removed endpoint finishes normally.
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight call finishes");
    assert_eq!(r.into_inner().backend, "a");
    // The same client connection: the next call meets the new api_key stage, then reaches b.
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(EchoRequest::default());
    req.metadata_mut()
        .insert("x-api-key", "key-0123456789".parse().unwrap());
    assert_eq!(c.unary(req).await.unwrap().into_inner().backend, "b");
    // The new listener serves v (which is a).
    let l2 = gw
        .running
        .listener_addrs()
        .into_iter()
        .find(|(n, _)| n == "l2")
        .unwrap()
        .1;
    let mut c2 = synapsor_testkit::client(l2).await;
    assert_eq!(backend_of(&mut c2).await, "a");
    let (_, up) = http_get(admin, "/upstreams").await;
    assert!(
        up.contains(&b.addr.to_string()) && up.contains("\"name\":\"v\""),
        "{up}"
    );
    let (_, cfg) = http_get(admin, "/config").await;
    assert!(cfg.contains("l2"), "/config shows the reloaded config");

    // Removing l2: its in-flight call finishes, then it stops accepting.
    let mut slow = c2.clone();
    let in_flight = tokio::spawn(async move {
        slow.unary(EchoRequest {
            delay_ms: 800,
            ..Default::default()
        })
        .await
    });
    wait_until(5, "the slow call reaches a", || a.observed.in_flight() == 1).await;
    file.write(&yaml(&listener("l", "u", ""), &upstream("u", &[&b]), ""));
    let (status, body) = http_post(admin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("listener l2 removed") && body.contains("upstream v removed"),
        "{body}"
    );
    assert_eq!(in_flight.await.unwrap().unwrap().into_inner().backend, "a");
    wait_until(5, "l2 stops accepting", || {
        std::net::TcpStream::connect_timeout(&l2, Duration::from_millis(200)).is_err()
    })
    .await;
    assert_eq!(
        backend_of(&mut c).await,
        "b",
        "the api_key stage is gone again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing_and_says_where() {
    let a = Backend::start("a").await;
    let good = yaml(&listener("l", "u", ""), &upstream("u", &[&a]), "");
    let file = ConfigFile::new("broken", &good);
    let gw = start(&file).await;
    let admin = gw.admin.unwrap();
    file.write(&good.replace("drain_timeout: 5s", "drain_timeout: 5s, max_conections: 3"));
    let (status, body) = http_post(admin, "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("synapsor.yaml:4:"), "file and line: {body}");
    assert!(body.contains("max_conections"), "the field: {body}");
    // A reference to an unknown upstream fails validation the same way.
    file.write(&good.replace("upstream: u", "upstream: nope"));
    let (status, body) = http_post(admin, "/reload").await;
    assert_eq!(status, 422);
    assert!(body.contains("listeners[0].upstream"), "{body}");
    let mut c = gw.client().await;
    assert_eq!(
        backend_of(&mut c).await,
        "a",
        "still serving the old config"
    );
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("synapsor_config_reloads_total{result=\"refused\"} 2"),
        "{metrics}"
    );
    let (status, _) = http_get(admin, "/reload").await;
    assert_eq!(status, 405, "reload is POST only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_once_it_settles() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let extra = "reload: { poll_interval: 100ms }\n";
    let file = ConfigFile::new(
        "watch",
        &yaml(&listener("l", "u", ""), &upstream("u", &[&a]), extra),
    );
    let gw = start(&file).await;
    file.write(&yaml(&listener("l", "u", ""), &upstream("u", &[&b]), extra));
    let b_addr = b.addr.to_string();
    wait_until(10, "the file change applied", || {
        let m = gw.running.upstream("u").unwrap().members();
        m.endpoints.len() == 1 && *m.endpoints[0].address == *b_addr
    })
    .await;
    let mut c = gw.client().await;
    assert_eq!(backend_of(&mut c).await, "b");
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("synapsor_config_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_load_fails_no_call() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let configs = [
        yaml(&listener("l", "u", ""), &upstream("u", &[&a]), ""),
        yaml(&listener("l", "u", ""), &upstream("u", &[&a, &b]), ""),
        yaml(&listener("l", "u", ""), &upstream("u", &[&b]), ""),
        yaml(
            &listener("l", "u", ", max_concurrent_streams: 500"),
            &upstream("u", &[&b, &a]),
            "",
        ),
    ];
    let file = ConfigFile::new("load", &configs[0]);
    let gw = start(&file).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut c = gw.client().await;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let t = Instant::now();
            // Bounded in count and time.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || t.elapsed() > Duration::from_secs(30) {
                    break;
                }
                match c.unary(EchoRequest::default()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(st) => {
                        eprintln!("failed: {st:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for round in 1..=8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        file.write(&configs[round % configs.len()]);
        let r = gw.running.reload().await;
        assert!(r.is_ok(), "{r:?}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} calls during 8 reloads, {failed} failed");
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(failed, 0);
}

/// `/metrics` never shows a series twice: a reload that rebuilds a listener's stages loads its
/// `wasm` stage's plugin again, and the new one replaces the old one's series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_metrics_stay_single_across_reloads() {
    let a = Backend::start("a").await;
    let probe = support::plugin("probe");
    let stages = |timeout: &str| {
        format!(
            ", interceptors: [ {{ wasm: {{ name: p, path: \"{}\", timeout: {timeout} }} }} ]",
            probe.display()
        )
    };
    let cfg = |timeout: &str| {
        yaml(
            &listener("l", "u", &stages(timeout)),
            &upstream("u", &[&a]),
            "",
        )
    };
    let file = ConfigFile::new("plugin-metrics", &cfg("1s"));
    let gw = start(&file).await;
    let admin = gw.admin.unwrap();
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
    for timeout in ["2s", "3s"] {
        file.write(&cfg(timeout));
        let (status, body) = http_post(admin, "/reload").await;
        assert_eq!(status, 200, "{body}");
        c.unary(EchoRequest::default()).await.unwrap();
    }
    let (_, metrics) = http_get(admin, "/metrics").await;
    let mut seen = std::collections::HashSet::new();
    let mut plugin_series = 0;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        assert!(
            seen.insert(series.to_string()),
            "{series} twice in:\n{metrics}"
        );
        plugin_series += usize::from(series.contains("plugin=\"p\""));
    }
    assert!(plugin_series > 0, "{metrics}");
}
