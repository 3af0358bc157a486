//! Checks that go beyond the schema: names resolve, values are in range, matchers are well formed.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::model::{Config, ListenerConfig, RouteConfig, STOCK_MIN_PING_INTERVAL};
use super::stage::{check_method_pattern, StageConfig};
use super::validate_upstream::validate_upstreams;

/// Settings that are valid but likely to hurt, as (field path, message): a pool keepalive
/// shorter than stock gRPC servers accept.
pub fn warnings(c: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, u) in c.upstreams.iter().enumerate() {
        let t = u.pool.keepalive_time.0;
        if !t.is_zero() && t < STOCK_MIN_PING_INTERVAL {
            out.push((
                format!("upstreams[{i}].pool.keepalive_time"),
                format!(
                    "{t:?} is shorter than the 5 min stock gRPC servers (C-core/grpcio, grpc-go, \
                     grpc-java) accept between PINGs while a call is open and quiet; such a \
                     server answers the third early PING with GOAWAY ENHANCE_YOUR_CALM \
                     \"too_many_pings\" and the calls on that connection fail, unless it permits \
                     it (grpc.http2.min_ping_interval_without_data_ms, \
                     keepalive.EnforcementPolicy.MinTime, permitKeepAliveTime)"
                ),
            ));
        }
    }
    out
}

/// The first problem found, as (field path, message). The sections are checked in this order:
/// the top level, the upstreams, the listeners (with their routes and stages), the plugins.
pub fn validate(c: &Config) -> Result<(), (String, String)> {
    validate_top_level(c)?;
    let names = validate_upstreams(c)?;
    validate_listeners(c, &names)?;
    validate_plugins(c)
}

/// The sections that must not be empty, `runtime` and `reload`.
fn validate_top_level(c: &Config) -> Result<(), (String, String)> {
    if c.listeners.is_empty() {
        return Err(("listeners".into(), "at least one listener is needed".into()));
    }
    if c.upstreams.is_empty() {
        return Err(("upstreams".into(), "at least one upstream is needed".into()));
    }
    if c.runtime.workers > 256 {
        return Err(("runtime.workers".into(), "must be at most 256".into()));
    }
    let poll = c.reload.poll_interval.0;
    if poll < std::time::Duration::from_millis(100) || poll > std::time::Duration::from_secs(3600) {
        return Err((
            "reload.poll_interval".into(),
            "must be from 100ms to 1h".into(),
        ));
    }
    Ok(())
}

/// Every listener, in order, against the upstream `names`.
fn validate_listeners(c: &Config, names: &HashSet<&str>) -> Result<(), (String, String)> {
    let mut lnames = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in c.listeners.iter().enumerate() {
        validate_listener(c, i, l, names, &mut lnames, &mut addrs)?;
    }
    Ok(())
}

/// Listener `l` (number `i`): its name (added to `lnames`, the names of the listeners before it), TLS, address
/// (added to `addrs`; not the admin one), upstream, limits, stages and routes.
fn validate_listener<'c>(
    c: &Config,
    i: usize,
    l: &'c ListenerConfig,
    names: &HashSet<&str>,
    lnames: &mut HashSet<&'c str>,
    addrs: &mut HashSet<SocketAddr>,
) -> Result<(), (String, String)> {
    let at = |f: &str| format!("listeners[{i}].{f}");
    if l.name.is_empty() {
        return Err((at("name"), "must not be empty".into()));
    }
    if !lnames.insert(l.name.as_str()) {
        return Err((at("name"), format!("duplicate listener name {:?}", l.name)));
    }
    if let Some(t) = &l.tls {
        t.validate()
            .map_err(|(f, m)| (at(&format!("tls.{f}")), m))?;
    }
    // Port 0 (any free port, as tests use) can never clash.
    if l.listen.port() != 0 && !addrs.insert(l.listen) {
        return Err((
            at("listen"),
            format!("{} is used by two listeners", l.listen),
        ));
    }
    if c.admin.enabled && l.listen.port() != 0 && l.listen == c.admin.listen {
        return Err((at("listen"), format!("{} is the admin address", l.listen)));
    }
    match &l.upstream {
        Some(u) if !names.contains(u.as_str()) => {
            return Err((at("upstream"), unknown_upstream(u, names)));
        }
        None if l.routes.is_empty() => {
            return Err((
                at("upstream"),
                "a listener needs an upstream, or routes to pick one".into(),
            ));
        }
        _ => {}
    }
    validate_limits(l).map_err(|(f, m)| (at(&f), m))?;
    for (j, stage) in l.interceptors.iter().enumerate() {
        validate_stage(stage).map_err(|(f, m)| {
            let kind = stage.kind();
            (format!("listeners[{i}].interceptors[{j}].{kind}.{f}"), m)
        })?;
    }
    for (j, r) in l.routes.iter().enumerate() {
        validate_route(i, j, r, names)?;
    }
    Ok(())
}

/// The first problem in one listener's connection and HTTP/2 limits, as (field within the
/// listener, message).
fn validate_limits(l: &ListenerConfig) -> Result<(), (String, String)> {
    if l.max_connections == 0 || l.max_connections > 1_000_000 {
        return Err(("max_connections".into(), "must be from 1 to 1000000".into()));
    }
    if l.max_concurrent_streams == 0 {
        return Err(("max_concurrent_streams".into(), "must be at least 1".into()));
    }
    if l.max_header_list_size < 1024 {
        return Err((
            "max_header_list_size".into(),
            "must be at least 1024".into(),
        ));
    }
    Ok(())
}

/// Route `j` of listener `i`: exactly one well-formed matcher, a known upstream, its stages.
fn validate_route(
    i: usize,
    j: usize,
    r: &RouteConfig,
    names: &HashSet<&str>,
) -> Result<(), (String, String)> {
    let at = |f: &str| format!("listeners[{i}].routes[{j}]{f}");
    match (&r.path_prefix, &r.metadata) {
        (Some(_), Some(_)) | (None, None) => {
            return Err((
                at(""),
                "a route needs exactly one of path_prefix or metadata".into(),
            ))
        }
        (Some(p), None) if !p.starts_with('/') => {
            return Err((
                at(".path_prefix"),
                format!("{p:?} must start with '/' (for example /pkg.Service/)"),
            ))
        }
        (None, Some(m)) => {
            if http::HeaderName::from_bytes(m.name.as_bytes()).is_err()
                || m.name.bytes().any(|b| b.is_ascii_uppercase())
                || m.name.starts_with(':')
            {
                return Err((
                    at(".metadata.name"),
                    format!("{:?} is not a valid lower-case metadata name", m.name),
                ));
            }
            if http::HeaderValue::from_str(&m.value).is_err() {
                return Err((
                    at(".metadata.value"),
                    format!("{:?} is not a valid metadata value", m.value),
                ));
            }
        }
        _ => {}
    }
    if !names.contains(r.upstream.as_str()) {
        return Err((at(".upstream"), unknown_upstream(&r.upstream, names)));
    }
    for (k, stage) in r.interceptors.iter().enumerate() {
        validate_stage(stage)
            .map_err(|(f, m)| (at(&format!(".interceptors[{k}].{}.{f}", stage.kind())), m))?;
    }
    Ok(())
}

/// Plugin names are unique (they key metrics and counters), and all plugins' instances fit the
/// host's pool.
fn validate_plugins(cfg: &Config) -> Result<(), (String, String)> {
    let mut seen = HashSet::new();
    let mut total = 0u32;
    for (i, l) in cfg.listeners.iter().enumerate() {
        let lists = std::iter::once((format!("listeners[{i}]"), &l.interceptors)).chain(
            l.routes
                .iter()
                .enumerate()
                .map(move |(j, r)| (format!("listeners[{i}].routes[{j}]"), &r.interceptors)),
        );
        for (at, list) in lists {
            for (k, stage) in list.iter().enumerate() {
                if let StageConfig::Wasm(w) = stage {
                    let field = |f: &str| format!("{at}.interceptors[{k}].wasm.{f}");
                    if !seen.insert(w.name.as_str()) {
                        return Err((
                            field("name"),
                            format!("another plugin is already named {:?}", w.name),
                        ));
                    }
                    callout_groups(cfg, w).map_err(|(f, m)| (field(&f), m))?;
                    total += w.max_instances;
                    if total > super::MAX_TOTAL_INSTANCES {
                        return Err((
                            field("max_instances"),
                            format!(
                                "all plugins together may keep at most {} instances",
                                super::MAX_TOTAL_INSTANCES
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every group a plugin may call out to is an upstream of the config.
fn callout_groups(cfg: &Config, w: &super::WasmConfig) -> Result<(), (String, String)> {
    let groups = w.callouts.iter().flat_map(|c| c.groups.iter());
    for (g, name) in groups.enumerate() {
        if !cfg.upstreams.iter().any(|u| &u.name == name) {
            let names = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
            return Err((
                format!("callouts.groups[{g}]"),
                unknown_upstream(name, &names),
            ));
        }
    }
    Ok(())
}

fn unknown_upstream(name: &str, names: &HashSet<&str>) -> String {
    let mut known: Vec<_> = names.iter().copied().collect();
    known.sort_unstable();
    format!(
        "no upstream is named {name:?} (upstreams: {})",
        known.join(", ")
    )
}

/// The first problem in one stage, as (field within the stage, message).
fn validate_stage(stage: &StageConfig) -> Result<(), (String, String)> {
    let (methods, max_keys) = match stage {
        StageConfig::RateLimit(r) => {
            if r.rate == 0 {
                return Err(("rate".into(), "must be at least 1".into()));
            }
            if r.per.0.is_zero() {
                return Err(("per".into(), "must be more than 0".into()));
            }
            if r.per.0 / r.rate == std::time::Duration::ZERO {
                return Err(("rate".into(), "is more than one call per nanosecond".into()));
            }
            if r.burst == Some(0) {
                return Err(("burst".into(), "must be at least 1".into()));
            }
            if let Some(b) = &r.backend {
                b.validate(r.burst.unwrap_or(r.rate))
                    .map_err(|(f, m)| (format!("backend.{f}"), m))?;
            }
            (&r.methods, r.max_keys)
        }
        StageConfig::ConcurrencyLimit(c) => {
            if c.max == 0 {
                return Err(("max".into(), "must be at least 1".into()));
            }
            (&c.methods, c.max_keys)
        }
        StageConfig::ApiKey(a) => return validate_api_key(a),
        StageConfig::Access(a) => return validate_access(a),
        StageConfig::Jwt(j) => return validate_jwt(j),
        StageConfig::Wasm(w) => return w.validate(),
        StageConfig::AccessLog(a) => {
            if !(0.0..=1.0).contains(&a.sample) {
                return Err(("sample".into(), "must be from 0 to 1".into()));
            }
            if a.output.is_empty() {
                return Err(("output".into(), "use stdout or a file path".into()));
            }
            return Ok(());
        }
        StageConfig::Metrics(m) => {
            if m.max_methods == 0 || m.max_methods > 100_000 {
                return Err(("max_methods".into(), "must be from 1 to 100000".into()));
            }
            return Ok(());
        }
    };
    if max_keys == 0 || max_keys > 10_000_000 {
        return Err(("max_keys".into(), "must be from 1 to 10000000".into()));
    }
    for (k, m) in methods.iter().enumerate() {
        check_method_pattern(m).map_err(|e| (format!("methods[{k}]"), e))?;
    }
    Ok(())
}

fn header_name_ok(n: &str) -> bool {
    http::HeaderName::from_bytes(n.as_bytes()).is_ok()
        && !n.bytes().any(|b| b.is_ascii_uppercase())
        && !n.starts_with(':')
}

fn validate_api_key(a: &super::auth::ApiKeyConfig) -> Result<(), (String, String)> {
    for (f, n) in [
        ("header", &a.header),
        ("principal_header", &a.principal_header),
    ] {
        if !header_name_ok(n) {
            return Err((
                f.into(),
                format!("{n:?} is not a valid lower-case metadata name"),
            ));
        }
    }
    if a.keys.is_empty() && a.keys_file.is_none() && a.keys_env.is_none() {
        return Err((
            "keys".into(),
            "no keys: give keys, keys_file or keys_env".into(),
        ));
    }
    validate_keys(&a.keys).map_err(|(f, m)| (format!("keys{f}"), m))
}

/// Checks a list of API keys (also used for keys files).
pub fn validate_keys(keys: &[super::auth::ApiKeyEntry]) -> Result<(), (String, String)> {
    for (k, e) in keys.iter().enumerate() {
        if e.key.len() < 8 {
            return Err((format!("[{k}].key"), "must be at least 8 characters".into()));
        }
        if http::HeaderValue::from_str(&e.key).is_err() {
            return Err((format!("[{k}].key"), "must be printable ASCII".into()));
        }
        if e.principal.is_empty() || crate::grpc::field_value(&e.principal).is_none() {
            return Err((
                format!("[{k}].principal"),
                "must be non-empty printable ASCII, without spaces at either end".into(),
            ));
        }
        for (m, p) in e.methods.iter().enumerate() {
            check_method_pattern(p).map_err(|e| (format!("[{k}].methods[{m}]"), e))?;
        }
    }
    Ok(())
}

fn validate_access(a: &super::auth::AccessConfig) -> Result<(), (String, String)> {
    for (list, rules) in [("allow", &a.allow), ("deny", &a.deny)] {
        for (r, rule) in rules.iter().enumerate() {
            for (k, m) in rule.methods.iter().enumerate() {
                check_method_pattern(m).map_err(|e| (format!("{list}[{r}].methods[{k}]"), e))?;
            }
            for (k, p) in rule.peers.iter().enumerate() {
                super::auth::Cidr::parse(p).map_err(|e| (format!("{list}[{r}].peers[{k}]"), e))?;
            }
        }
    }
    Ok(())
}

fn validate_jwt(j: &super::auth::JwtConfig) -> Result<(), (String, String)> {
    for (f, n) in [
        ("header", &j.header),
        ("principal_header", &j.principal_header),
    ] {
        if !header_name_ok(n) {
            return Err((
                f.into(),
                format!("{n:?} is not a valid lower-case metadata name"),
            ));
        }
    }
    for (claim, header) in &j.claims_to_headers {
        if !header_name_ok(header) {
            return Err((
                format!("claims_to_headers.{claim}"),
                format!("{header:?} is not a valid lower-case metadata name"),
            ));
        }
    }
    let secrets = usize::from(j.secret_env.is_some()) + usize::from(j.secret_file.is_some());
    let keys = usize::from(j.public_key_file.is_some()) + usize::from(j.jwks_file.is_some());
    match j.algorithm.as_str() {
        "HS256" if secrets == 1 && keys == 0 => Ok(()),
        "HS256" => Err((
            "algorithm".into(),
            "HS256 takes exactly one of secret_env or secret_file (and no public key)".into(),
        )),
        "RS256" | "ES256" if keys == 1 && secrets == 0 => Ok(()),
        "RS256" | "ES256" => Err((
            "algorithm".into(),
            format!(
                "{} takes exactly one of public_key_file or jwks_file (and no secret)",
                j.algorithm
            ),
        )),
        other => Err((
            "algorithm".into(),
            format!("{other:?} is not supported: use HS256, RS256 or ES256"),
        )),
    }
}
