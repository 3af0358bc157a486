//! Loading plugins: hot reload of a changed file (calls in flight finish on the old version, a
//! broken file is refused), start-up errors naming the file, config errors naming the field,
//! and a component built against a later 0.1.x of the contract.

use crate::support;

use std::time::Duration;

use support::{
    first_metadata as one, gateway, http_get, plugin, staged_config as cfg, wasm_stage as wasm,
};
use synapsor_testkit::{Backend, EchoRequest};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_file_is_swapped_in_and_a_broken_one_is_refused() {
    let b = Backend::start("b").await;
    let dir = std::env::temp_dir().join(format!("synapsor-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("live.wasm");
    std::fs::copy(plugin("probe"), &file).unwrap();
    let stages = format!(
        "      - wasm: {{ name: live, path: \"{}\", timeout: 2s }}",
        file.display()
    );
    let gw = gateway(&cfg(&b.addr.to_string(), &stages)).await;
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
    assert!(one(&b, "x-probe-method").is_some(), "the probe serves");
    // A stream in flight when the file changes finishes on the version it started with.
    let mut slow = c
        .server_stream(EchoRequest {
            reply_count: 4,
            delay_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    slow.next().await.unwrap().unwrap();
    // Write the new version beside the file and rename it over, as deployments do.
    let tmp = dir.join("live.wasm.tmp");
    std::fs::copy(plugin("header_rewrite"), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let mut swapped = false;
    for _ in 0..200 {
        c.unary(EchoRequest::default())
            .await
            .expect("calls keep flowing");
        if one(&b, "x-probe-method").is_none() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the new version serves within 20 s");
    while let Some(m) = slow.next().await {
        m.expect("the old version finishes its stream");
    }
    let trailers = slow.trailers().await.unwrap().unwrap();
    assert_eq!(
        trailers.get("x-probe-status").unwrap(),
        "0",
        "on-response ran on the version the call started with"
    );
    // A broken file: the reload fails and the working version keeps serving.
    std::fs::write(&tmp, b"not a component").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let admin = gw.admin.unwrap();
    let mut failed = false;
    for _ in 0..100 {
        let (_, body) = http_get(admin, "/metrics").await;
        if body.contains("synapsor_plugin_reloads_total{plugin=\"live\",result=\"failed\"} 1") {
            assert!(body.contains("synapsor_plugin_reloads_total{plugin=\"live\",result=\"ok\"} 1"));
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "the broken file was noticed and refused");
    c.unary(EchoRequest::default())
        .await
        .expect("the previous version still serves");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_cannot_load_stop_the_start_with_a_clear_error() {
    let b = Backend::start("b").await;
    let start = |stages: String| {
        let yaml = cfg(&b.addr.to_string(), &stages);
        async move {
            let loaded = synapsor::config::parse(&yaml, std::path::Path::new("test.yaml")).unwrap();
            let gw = synapsor::Gateway::bind(loaded.config).await.unwrap();
            match gw.start() {
                Ok(_) => panic!("started"),
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let e = start(wasm("m", "misbehave", ", config: { fail_init: true }")).await;
    assert!(
        e.contains("interceptors[0].wasm") && e.contains("init failed: refusing to start"),
        "{e}"
    );
    // An init that spins is reported as such, not as a bare "timed out".
    let e = start(format!(
        "      - wasm: {{ name: m, path: \"{}\", timeout: 20ms, config: {{ spin_init: true }} }}",
        plugin("misbehave").display()
    ))
    .await;
    assert!(
        e.contains("interceptors[0].wasm") && e.contains("timed out in init"),
        "{e}"
    );
    let e = start("      - wasm: { name: gone, path: /nonexistent/x.wasm }".into()).await;
    assert!(e.contains("cannot read plugin /nonexistent/x.wasm"), "{e}");
    let junk = std::env::temp_dir().join(format!("synapsor-junk-{}.wasm", std::process::id()));
    std::fs::write(&junk, b"\0asm but not really").unwrap();
    let e = start(format!(
        "      - wasm: {{ name: bad, path: \"{}\" }}",
        junk.display()
    ))
    .await;
    let _ = std::fs::remove_file(&junk);
    assert!(e.contains("is not a valid component"), "{e}");
}

#[test]
fn plugin_config_errors_name_the_field() {
    let yaml = |extra: &str| {
        format!(
            "listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    interceptors:
      - wasm: {{ name: p, path: p.wasm{extra} }}
upstreams:
  - {{ name: u, endpoints: [ \"127.0.0.1:1\" ] }}
"
        )
    };
    let err = |extra: &str| {
        synapsor::config::parse(&yaml(extra), std::path::Path::new("t.yaml"))
            .unwrap_err()
            .to_string()
    };
    let e = err(", memory_limit: 1GiB");
    assert!(
        e.contains("t.yaml:6") && e.contains("listeners[0].interceptors[0].wasm.memory_limit"),
        "{e}"
    );
    let e = err(", isolation: sometimes");
    assert!(e.contains("t.yaml:6") && e.contains("isolation"), "{e}");
    let e = err(", timeout: 0ms");
    assert!(e.contains("wasm.timeout"), "{e}");
    let e = err(", bogus: 1");
    assert!(e.contains("unknown field `bogus`"), "{e}");
    let ok = synapsor::config::parse(
        &yaml(", config: { tenants: [a, b] }, isolation: reuse, timeout: 5ms, memory_limit: 16MiB, on_error: deny, max_instances: 64"),
        std::path::Path::new("t.yaml"),
    )
    .expect("the issue's example parses");
    let synapsor::config::StageConfig::Wasm(w) = &ok.config.listeners[0].interceptors[0] else {
        panic!()
    };
    assert_eq!(w.config_json().unwrap(), r#"{"tenants":["a","b"]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_a_later_0_1_contract_loads() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b.addr.to_string(),
        &wasm(
            "later",
            "method_deny_0_1_9",
            ", config: { deny_prefix: /nope. }",
        ),
    ))
    .await;
    let mut c = gw.client().await;
    c.unary(EchoRequest::default()).await.unwrap();
    assert_eq!(one(&b, "x-c-plugin").as_deref(), Some("1"));
}
