//! `rate_limit.backend`: buckets shared by every gateway replica through Redis, and
//! `rate_limit.on_backend_error`: what a call gets when that store cannot be asked.

use serde::{Deserialize, Serialize};

use super::duration::Dur;

/// Where a `rate_limit` keeps its buckets when they are shared.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitBackend {
    /// `redis://[user:password@]host:port/db`: an atomic GCRA bucket per key in Redis (one Lua
    /// script, one round trip, on the server's clock).
    pub redis: String,
    /// Longest wait for Redis's answer (default `50ms`); past it the call gets
    /// `on_backend_error`.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Connections to Redis, each multiplexed (default 2).
    #[serde(default = "two")]
    pub pool_size: usize,
    /// Calls each gateway takes from a bucket at once and then admits without asking Redis
    /// (default 0: ask on every call). Up to this many calls per key and replica may be
    /// admitted ahead of the shared rate; unused ones lapse after `per`.
    #[serde(default)]
    pub local_allowance: u32,
    /// Prefix of the Redis keys; replicas share a bucket when prefix and key are the same
    /// (default `synapsor:rl:LISTENER:STAGE-INDEX:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

fn default_timeout() -> Dur {
    Dur::millis(50)
}
fn two() -> usize {
    2
}

/// What a call gets when the shared store fails or does not answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    /// Admit it.
    Allow,
    /// Refuse it with UNAVAILABLE.
    Deny,
    /// Apply the same limit in this process alone (the default).
    #[default]
    Local,
}

impl LimitBackend {
    /// Checks the fields; the error names the field.
    pub fn validate(&self, burst: u32) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if !self.redis.starts_with("redis://") {
            return bad("redis", "must be a redis:// URL (redis://host:port/db)");
        }
        if redis::Client::open(self.redis.as_str()).is_err() {
            return bad("redis", "is not a valid redis:// URL");
        }
        let t = self.timeout.0;
        if t < std::time::Duration::from_millis(1) || t > std::time::Duration::from_secs(10) {
            return bad("timeout", "must be from 1ms to 10s");
        }
        if self.pool_size == 0 || self.pool_size > 16 {
            return bad("pool_size", "must be from 1 to 16");
        }
        if self.local_allowance > burst {
            return bad("local_allowance", "must be at most the burst");
        }
        if let Some(p) = &self.key_prefix {
            if p.len() > 256 {
                return bad("key_prefix", "must be at most 256 bytes");
            }
        }
        Ok(())
    }
}
