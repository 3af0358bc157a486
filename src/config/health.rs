//! `upstreams[].health_check`: active health checks of every endpoint of a group.

use serde::{Deserialize, Serialize};

use super::duration::Dur;

/// How and how often each endpoint is checked; an endpoint that fails `unhealthy_threshold`
/// checks in a row leaves rotation until it passes `healthy_threshold` in a row.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `grpc` (the `grpc.health.v1.Health/Check` protocol, the default) or `tcp` (a connect).
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// For `grpc`: the service name asked about (`""`, the default, means the server as a
    /// whole).
    #[serde(default)]
    pub service: String,
    /// Time between checks of one endpoint (default `5s`), with ±10% jitter.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// A check that takes longer fails (default `1s`).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Passing checks in a row that bring an endpoint back (default 2).
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Failing checks in a row that take an endpoint out (default 3).
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

/// What a health check does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// `grpc.health.v1.Health/Check` over HTTP/2; healthy when it answers SERVING.
    #[default]
    Grpc,
    /// A TCP connect; healthy when it succeeds.
    Tcp,
}

fn default_interval() -> Dur {
    Dur::secs(5)
}
fn default_timeout() -> Dur {
    Dur::secs(1)
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

impl HealthCheckConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if self.interval.0 < std::time::Duration::from_millis(10) {
            return bad("interval", "must be at least 10ms");
        }
        if self.timeout.0.is_zero() || self.timeout.0 > self.interval.0 {
            return bad("timeout", "must be more than 0 and at most the interval");
        }
        if self.healthy_threshold == 0 || self.healthy_threshold > 100 {
            return bad("healthy_threshold", "must be from 1 to 100");
        }
        if self.unhealthy_threshold == 0 || self.unhealthy_threshold > 100 {
            return bad("unhealthy_threshold", "must be from 1 to 100");
        }
        if self.service.len() > 256 || self.service.chars().any(char::is_control) {
            return bad(
                "service",
                "must be a service name of at most 256 characters",
            );
        }
        if self.kind == HealthCheckKind::Tcp && !self.service.is_empty() {
            return bad("service", "only a grpc check asks about a service");
        }
        Ok(())
    }
}
