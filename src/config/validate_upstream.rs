//! The checks of the `upstreams` section, the part of `validate` that the listeners' and
//! routes' checks build on (they name upstreams).

use std::collections::HashSet;

use super::model::{Config, PoolConfig, PoolMode, UpstreamConfig};

/// Every upstream, in order; on success, the set of their names (for listeners and routes to
/// name).
pub(super) fn validate_upstreams(c: &Config) -> Result<HashSet<&str>, (String, String)> {
    let mut names = HashSet::new();
    for (i, u) in c.upstreams.iter().enumerate() {
        validate_upstream(i, u, &mut names)?;
    }
    Ok(names)
}

/// Upstream `i`: its name (added to `names`, the names of the upstreams before it), its nested
/// sections, its durations, its endpoints and its pool.
fn validate_upstream<'c>(
    i: usize,
    u: &'c UpstreamConfig,
    names: &mut HashSet<&'c str>,
) -> Result<(), (String, String)> {
    let at = |f: &str| format!("upstreams[{i}].{f}");
    if u.name.is_empty() {
        return Err((at("name"), "must not be empty".into()));
    }
    if !names.insert(u.name.as_str()) {
        return Err((at("name"), format!("duplicate upstream name {:?}", u.name)));
    }
    if u.endpoints.is_empty() {
        return Err((at("endpoints"), "at least one endpoint is needed".into()));
    }
    if let Some(h) = &u.health_check {
        h.validate()
            .map_err(|(f, m)| (at(&format!("health_check.{f}")), m))?;
    }
    if let Some(t) = &u.tls {
        t.validate()
            .map_err(|(f, m)| (at(&format!("tls.{f}")), m))?;
    }
    if let Some(o) = &u.outlier_detection {
        o.validate()
            .map_err(|(f, m)| (at(&format!("outlier_detection.{f}")), m))?;
    }
    if u.slow_start.0 > std::time::Duration::from_secs(3600) {
        return Err((at("slow_start"), "must be at most 1h".into()));
    }
    if u.resolve_interval.0 < std::time::Duration::from_millis(100)
        || u.resolve_interval.0 > std::time::Duration::from_secs(86_400)
    {
        return Err((at("resolve_interval"), "must be from 100ms to 24h".into()));
    }
    let mut seen = HashSet::new();
    for (j, e) in u.endpoints.iter().enumerate() {
        if !seen.insert(e.address.as_str()) {
            return Err((
                at(&format!("endpoints[{j}]")),
                format!("endpoint {:?} is listed twice", e.address),
            ));
        }
    }
    validate_pool(&u.pool).map_err(|(f, m)| (at(&format!("pool.{f}")), m))
}

/// The first problem in one upstream's `pool`, as (field within the pool, message).
fn validate_pool(p: &PoolConfig) -> Result<(), (String, String)> {
    if p.max_connections == 0 {
        return Err(("max_connections".into(), "must be at least 1".into()));
    }
    if p.min_connections > p.max_connections {
        return Err((
            "min_connections".into(),
            format!(
                "min_connections ({}) is larger than max_connections ({})",
                p.min_connections, p.max_connections
            ),
        ));
    }
    if p.max_connections > 1024 {
        return Err(("max_connections".into(), "must be at most 1024".into()));
    }
    if p.dial_timeout.0.is_zero() {
        return Err(("dial_timeout".into(), "must be more than 0".into()));
    }
    if p.mode == PoolMode::Strict && p.queue_timeout.0.is_zero() {
        return Err((
            "queue_timeout".into(),
            "must be more than 0 in strict mode".into(),
        ));
    }
    if p.queue_size == 0 || p.queue_size > 1_000_000 {
        return Err(("queue_size".into(), "must be from 1 to 1000000".into()));
    }
    if !p.keepalive_time.0.is_zero() && p.keepalive_timeout.0.is_zero() {
        return Err((
            "keepalive_timeout".into(),
            "must be more than 0 when keepalive_time is set".into(),
        ));
    }
    if p.backoff_max_delay.0.is_zero() {
        return Err(("backoff_max_delay".into(), "must be more than 0".into()));
    }
    Ok(())
}
