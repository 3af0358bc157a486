use std::path::Path;

use super::*;

fn err(text: &str) -> ConfigError {
    parse(text, Path::new("test.yaml")).expect_err("config should be rejected")
}

const MINIMAL: &str = "\
listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
upstreams:
  - name: u
    endpoints: [ \"127.0.0.1:1\" ]
";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL, Path::new("m.yaml")).unwrap().config;
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
    let u = &c.upstreams[0];
    assert_eq!(u.balance, Balance::LeastRequest);
    assert_eq!(u.pool.mode, PoolMode::Loose);
    assert_eq!(u.pool.max_connections, 8);
    assert_eq!(u.request_timeout, Dur::secs(30));
    assert_eq!(c.listeners[0].drain_timeout, Dur::secs(30));
}

#[test]
fn unknown_key_names_file_line_and_field() {
    let e = err(&MINIMAL.replace("    upstream: u\n", "    upstream: u\n    upstrem: v\n"));
    let msg = e.to_string();
    assert!(msg.starts_with("test.yaml:5:"), "{msg}");
    assert!(msg.contains("unknown field `upstrem`"), "{msg}");
    assert!(msg.contains("listeners[0]"), "{msg}");
}

#[test]
fn bad_duration_names_the_field() {
    let text = MINIMAL.replace(
        "    endpoints:",
        "    pool: { dial_timeout: 5 parsecs }\n    endpoints:",
    );
    let e = err(&text);
    assert_eq!(e.field, "upstreams[0].pool.dial_timeout");
    assert_eq!(e.location.unwrap().0, 7);
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn unknown_upstream_is_located_after_parsing() {
    let e = err(&MINIMAL.replace("    upstream: u", "    upstream: nope"));
    assert_eq!(e.field, "listeners[0].upstream");
    assert_eq!(e.location.unwrap().0, 4);
    assert!(
        e.message
            .contains("no upstream is named \"nope\" (upstreams: u)"),
        "{e}"
    );
}

#[test]
fn endpoint_errors() {
    let e = err(&MINIMAL.replace("127.0.0.1:1", "backend-2"));
    assert!(e.message.contains("has no port"), "{e}");
    assert_eq!(e.location.unwrap().0, 7);
    let e = err(&MINIMAL.replace("127.0.0.1:1", "127.0.0.1:1#0"));
    assert!(e.message.contains("weights go from 1 to 10000"), "{e}");
    let e = err(&MINIMAL.replace("[ \"127.0.0.1:1\" ]", "[ { address: \"a:1\", wieght: 2 } ]"));
    assert!(e.message.contains("unknown field `wieght`"), "{e}");
    let e = err(&MINIMAL.replace("[ \"127.0.0.1:1\" ]", "[]"));
    assert_eq!(e.field, "upstreams[0].endpoints");
    assert!(e.message.contains("at least one endpoint"), "{e}");
}

#[test]
fn semantic_errors() {
    let pool =
        |p: &str| MINIMAL.replace("    endpoints:", &format!("    pool: {p}\n    endpoints:"));
    let e = err(&pool("{ min_connections: 9, max_connections: 2 }"));
    assert_eq!(e.field, "upstreams[0].pool.min_connections");
    assert!(e.message.contains("larger than max_connections"), "{e}");
    let e = err(&pool("{ mode: lenient }"));
    assert!(e.message.contains("unknown variant `lenient`"), "{e}");
    let e = err(&MINIMAL.replace(
        "upstreams:",
        "  - name: l\n    listen: 127.0.0.1:1\n    upstream: u\nupstreams:",
    ));
    assert!(e.message.contains("duplicate listener name"), "{e}");
    let e = err(&MINIMAL.replace(
        "    upstream: u\n",
        "    upstream: u\n    routes: [ { path_prefix: /a, metadata: { name: x, value: y }, upstream: u } ]\n",
    ));
    assert_eq!(e.field, "listeners[0].routes[0]");
    assert!(
        e.message.contains("exactly one of path_prefix or metadata"),
        "{e}"
    );
    let e = err(&MINIMAL.replace(
        "    upstream: u\n",
        "    upstream: u\n    routes: [ { path_prefix: pkg.Svc/, upstream: u } ]\n",
    ));
    assert!(e.message.contains("must start with '/'"), "{e}");
    let e = err(&MINIMAL.replace("127.0.0.1:0", "not-an-address"));
    assert_eq!(e.field, "listeners[0].listen");
    let e = err("listeners: [\n  - name: x\n    listen: [oops\n");
    assert!(e.location.is_some(), "{e}");
    let e = err("listeners: []\nupstreams: []\n");
    assert!(e.message.contains("at least one listener"), "{e}");
}

const SEED: &str = "\
proxy:
  setting:
    LISTEN_PROXY_ADDR: '127.0.0.1'
  proxy_list:
    - PROXY_NAME: 'default'
      ENABLED: true
      POOL_ENABLED: true
      DIAL_TIMEOUT: 5
      BACKOFF_MAX_DELAY: 3
      KEEPALIVE_TIME: 5
      KEEPALIVE_TIMEOUT: 10
      REQUEST_IDLE_TIME: 10
      REQUEST_MAX_LIFE: 60
      REQUEST_TIMEOUT: 3
      POOL_MODEL: 1
      PROXY_MODEL: 'randomWeight'
      GRPC_REQUEST_REUSABLE: true
      DEFAULT_GRPC_CONN_NUM: 10
      PROXY_PORT: '30880'
      GRPC_PROXY_ENDPOINTS:
        - 127.0.0.1:50051#10
        - 127.0.0.1:50052#5
    - PROXY_NAME: 'second'
      PROXY_MODEL: minConn
      POOL_MODEL: 0
      PROXY_PORT: 30881
      GRPC_PROXY_ENDPOINTS: [ 127.0.0.1:50053 ]
    - PROXY_NAME: 'off'
      ENABLED: false
      PROXY_PORT: '30882'
      GRPC_PROXY_ENDPOINTS: [ 127.0.0.1:50054 ]
";

#[test]
fn original_format_is_mapped() {
    let loaded = parse(SEED, Path::new("ProxyConfig.yaml")).unwrap();
    let c = &loaded.config;
    assert_eq!(c.listeners.len(), 2, "the disabled entry is skipped");
    let (l, u) = (&c.listeners[0], &c.upstreams[0]);
    assert_eq!(l.listen.to_string(), "127.0.0.1:30880");
    assert_eq!(l.upstream.as_deref(), Some("default"));
    assert_eq!(u.balance, Balance::RandomWeight);
    assert_eq!(u.endpoints[0].weight, 10);
    assert_eq!(u.endpoints[1].address, "127.0.0.1:50052");
    assert_eq!(u.request_timeout, Dur::secs(3));
    let p = &u.pool;
    assert_eq!(p.mode, PoolMode::Loose);
    assert_eq!((p.min_connections, p.max_connections), (10, 10));
    assert_eq!(p.dial_timeout, Dur::secs(5));
    assert_eq!(p.backoff_max_delay, Dur::secs(3));
    assert_eq!(
        (p.keepalive_time, p.keepalive_timeout),
        (Dur::secs(5), Dur::secs(10))
    );
    assert_eq!(
        (p.idle_timeout, p.max_lifetime),
        (Dur::secs(10), Dur::secs(60))
    );
    assert!(p.reuse);
    let (l2, u2) = (&c.listeners[1], &c.upstreams[1]);
    assert_eq!(l2.listen.port(), 30881);
    assert_eq!(u2.balance, Balance::LeastRequest);
    assert_eq!(u2.pool.mode, PoolMode::Strict);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("ENABLED is false: entry \"off\" skipped")));
    assert!(loaded.warnings.iter().any(
        |w| w.contains("POOL_ENABLED`: has no effect") && w.starts_with("ProxyConfig.yaml:7:")
    ));
}

#[test]
fn original_format_errors_name_the_key() {
    let e = err(&SEED.replace("POOL_MODEL: 1", "POOL_MODEL: 3"));
    assert_eq!(e.field, "proxy.proxy_list[0].POOL_MODEL");
    assert!(
        e.message.contains("use 0 (STRICT_MODE) or 1 (LOOSE_MODE)"),
        "{e}"
    );
    let e = err(&SEED.replace("PROXY_MODEL: 'randomWeight'", "PROXY_MODEL: 'fastest'"));
    assert!(e.message.contains("use randomWeight or minConn"), "{e}");
    let e = err(&SEED.replace("DIAL_TIMEOUT: 5", "DIAL_TIMEOUT: 5\n      DAIL_TIMEOUT: 5"));
    assert!(e.message.contains("unknown field `DAIL_TIMEOUT`"), "{e}");
    assert_eq!(e.location.unwrap().0, 9);
    let e = err(&SEED.replace("PROXY_PORT: '30880'", "PROXY_PORT: '30881'"));
    assert!(e.message.contains("used by two listeners"), "{e}");
    assert_eq!(
        e.location.unwrap().0,
        26,
        "points at the entry's PROXY_PORT: {e}"
    );
}

#[test]
fn keepalive_below_what_stock_grpc_servers_accept_is_warned_about() {
    // The defaults warn about nothing.
    let quiet = parse(MINIMAL, Path::new("m.yaml")).unwrap();
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    let p = &quiet.config.upstreams[0].pool;
    assert_eq!(
        (p.keepalive_time, p.keepalive_timeout),
        (Dur::secs(300), Dur::secs(20))
    );
    let short = MINIMAL.replace(
        "    endpoints: [ \"127.0.0.1:1\" ]\n",
        "    endpoints: [ \"127.0.0.1:1\" ]\n    pool:\n      keepalive_time: 30s\n",
    );
    let w = parse(&short, Path::new("k.yaml")).unwrap().warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("k.yaml:9:"), "{}", w[0]);
    assert!(
        w[0].contains("upstreams[0].pool.keepalive_time"),
        "{}",
        w[0]
    );
    assert!(w[0].contains("too_many_pings"), "{}", w[0]);
    // The original format's KEEPALIVE_TIME: 5 is honoured, and named in the warning.
    let seed = parse(SEED, Path::new("seed.yaml")).unwrap();
    assert_eq!(seed.config.upstreams[0].pool.keepalive_time, Dur::secs(5));
    assert!(
        seed.warnings
            .iter()
            .any(|w| w.starts_with("seed.yaml:") && w.contains("KEEPALIVE_TIME")),
        "{:?}",
        seed.warnings
    );
}

fn with_plugin(fields: &str) -> String {
    format!(
        "listeners:
  - name: l
    listen: 127.0.0.1:0
    upstream: u
    interceptors:
      - wasm:
          name: p
          path: p.wasm
{fields}
upstreams:
  - name: u
    endpoints: [ \"127.0.0.1:1\" ]
"
    )
}

#[test]
fn callouts_and_state_are_checked_with_their_field_and_line() {
    let ok = parse(
        &with_plugin("          callouts: { groups: [u] }\n          state: { max_entries: 5 }"),
        Path::new("test.yaml"),
    )
    .unwrap();
    let StageConfig::Wasm(w) = &ok.config.listeners[0].interceptors[0] else {
        panic!("a wasm stage")
    };
    let c = w.callouts.as_ref().unwrap();
    assert_eq!(
        (c.timeout, c.max_in_flight, c.max_per_hook),
        (Dur::millis(200), 256, 4)
    );
    assert_eq!(w.state.max_value_size.0, 64 << 10);
    assert_eq!(w.state.on_redis_error, OnRedisError::Local);

    let e = err(&with_plugin("          callouts: { groups: [u, authz] }"));
    assert_eq!(
        e.field,
        "listeners[0].interceptors[0].wasm.callouts.groups[1]"
    );
    assert!(e.message.contains("no upstream is named \"authz\""), "{e}");
    assert_eq!(e.location.unwrap().0, 9, "{e}");
    let e = err(&with_plugin(
        "          callouts: { groups: [u], max_per_hook: 0 }",
    ));
    assert_eq!(
        e.field,
        "listeners[0].interceptors[0].wasm.callouts.max_per_hook"
    );
    let e = err(&with_plugin(
        "          state: { max_value_size: 32MiB, max_bytes: 64MiB }",
    ));
    assert_eq!(
        e.field,
        "listeners[0].interceptors[0].wasm.state.max_value_size"
    );
    let e = err(&with_plugin(
        "          state: { redis: { url: \"http://x\" } }",
    ));
    assert_eq!(e.field, "listeners[0].interceptors[0].wasm.state.redis.url");
    let e = err(&with_plugin("          state: { on_redis_error: allow }"));
    assert!(e.message.contains("unknown variant `allow`"), "{e}");
}
