//! A plugin's ways out of its sandbox: `callouts` (unary gRPC calls to configured upstream
//! groups) and `state` (a key-value store with expiry, optionally in Redis). Both are in the
//! `callout` and `state` interfaces of `wit/plugin.wit` (contract 0.2.1).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use super::size::ByteSize;

/// `callouts`: the upstream groups a plugin may call, and the bounds on its calls.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalloutConfig {
    /// The upstream groups (names under `upstreams:`) the plugin may call; none by default.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The longest a callout may wait for its whole answer (default `200ms`, Envoy
    /// `ext_authz`'s default; at most `30s`); a plugin may ask for less per call.
    #[serde(default = "default_callout_timeout")]
    pub timeout: Dur,
    /// Callouts of the plugin waiting at once, all its instances together (default 256);
    /// past it a callout fails at once with `limited`.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Callouts one hook call may make (default 4); past it a callout fails with `limited`.
    #[serde(default = "default_per_hook")]
    pub max_per_hook: u32,
}

impl Default for CalloutConfig {
    fn default() -> CalloutConfig {
        CalloutConfig {
            groups: Vec::new(),
            timeout: default_callout_timeout(),
            max_in_flight: default_in_flight(),
            max_per_hook: default_per_hook(),
        }
    }
}

fn default_callout_timeout() -> Dur {
    Dur::millis(200)
}
fn default_in_flight() -> u32 {
    256
}
fn default_per_hook() -> u32 {
    4
}

impl CalloutConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        let t = self.timeout.0;
        if t < Duration::from_millis(1) || t > Duration::from_secs(30) {
            return bad("timeout", "must be from 1ms to 30s");
        }
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return bad("max_in_flight", "must be from 1 to 100000");
        }
        if self.max_per_hook == 0 || self.max_per_hook > 64 {
            return bad("max_per_hook", "must be from 1 to 64");
        }
        for (i, g) in self.groups.iter().enumerate() {
            if self.groups[..i].contains(g) {
                return Err((format!("groups[{i}]"), format!("{g:?} is listed twice")));
            }
        }
        Ok(())
    }
}

/// `state`: the bounds of a plugin's key-value store and where it lives.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The most keys held in the gateway's memory (default 10000, at most 10 million).
    #[serde(default = "default_entries")]
    pub max_entries: u64,
    /// The most bytes of keys and values held in the gateway's memory (default `16MiB`, at
    /// most `4GiB`); with the per-entry overhead counted as 64 bytes.
    #[serde(default = "default_state_bytes")]
    pub max_bytes: ByteSize,
    /// The largest value (default `64KiB`, at most `max_bytes` and `16MiB`).
    #[serde(default = "default_value_size")]
    pub max_value_size: ByteSize,
    /// Keep the store in Redis instead, shared by every replica (the rate limit's Redis client:
    /// a few multiplexed connections, a timeout per request, a pause after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<StateRedis>,
    /// What an operation does when Redis cannot be asked (down, slow, not connected yet):
    /// `local` (default) uses this gateway's own store meanwhile, as the rate limit's
    /// `on_backend_error: local` does; `fail` answers the plugin `unavailable`.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            max_entries: default_entries(),
            max_bytes: default_state_bytes(),
            max_value_size: default_value_size(),
            redis: None,
            on_redis_error: OnRedisError::default(),
        }
    }
}

fn default_entries() -> u64 {
    10_000
}
fn default_state_bytes() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_value_size() -> ByteSize {
    ByteSize(64 << 10)
}

/// `state.redis`: where a plugin's shared store lives.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateRedis {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Longest wait for Redis's answer (default `50ms`, from 1ms to 10s).
    #[serde(default = "default_redis_timeout")]
    pub timeout: Dur,
    /// Connections to Redis, each multiplexed (default 2, at most 16).
    #[serde(default = "two")]
    pub pool_size: usize,
    /// Prefix of the Redis keys (default `synapsor:state:PLUGIN:`): replicas share a key when
    /// prefix and key are the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

fn default_redis_timeout() -> Dur {
    Dur::millis(50)
}
fn two() -> usize {
    2
}

/// What a state operation does when Redis cannot be asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Use the gateway's own store meanwhile.
    #[default]
    Local,
    /// Answer the plugin `unavailable`.
    Fail,
}

impl StateConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if self.max_entries == 0 || self.max_entries > 10_000_000 {
            return bad("max_entries", "must be from 1 to 10000000");
        }
        if self.max_bytes.0 < 1024 || self.max_bytes.0 > 4 << 30 {
            return bad("max_bytes", "must be from 1KiB to 4GiB");
        }
        let v = self.max_value_size.0;
        if v == 0 || v > self.max_bytes.0 || v > 16 << 20 {
            return bad(
                "max_value_size",
                "must be more than 0 and at most max_bytes and 16MiB",
            );
        }
        if let Some(r) = &self.redis {
            r.validate().map_err(|(f, m)| (format!("redis.{f}"), m))?;
        }
        Ok(())
    }
}

impl StateRedis {
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        if !self.url.starts_with("redis://") || redis::Client::open(self.url.as_str()).is_err() {
            return bad("url", "must be a redis:// URL (redis://host:port/db)");
        }
        let t = self.timeout.0;
        if t < Duration::from_millis(1) || t > Duration::from_secs(10) {
            return bad("timeout", "must be from 1ms to 10s");
        }
        if self.pool_size == 0 || self.pool_size > 16 {
            return bad("pool_size", "must be from 1 to 16");
        }
        if self
            .key_prefix
            .as_ref()
            .is_some_and(|p| p.is_empty() || p.len() > 256)
        {
            return bad(
                "key_prefix",
                "must be 1 to 256 bytes (leave it out for synapsor:state:PLUGIN:)",
            );
        }
        Ok(())
    }
}
