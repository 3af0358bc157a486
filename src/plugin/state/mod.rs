//! A plugin's shared state (`state` in `wit/plugin.wit`): byte values with an optional expiry,
//! scoped to the plugin and shared by all its instances on all workers. In the gateway's memory
//! ([`local`]), or in Redis ([`redis`]) so replicas share it, with this gateway's own store or an
//! error while Redis cannot be asked (`on_redis_error`).

pub mod local;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::bindings::StateError as WitError;
use crate::config::{OnRedisError, StateConfig};
use local::LocalStore;
use redis::RedisState;

/// The longest key.
pub const MAX_KEY: usize = 256;

/// Why an operation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The key or value is over its bound.
    TooLarge(String),
    /// The store is full.
    Full,
    /// Redis could not be asked (`on_redis_error: fail`).
    Unavailable(String),
}

impl From<StateError> for WitError {
    fn from(e: StateError) -> WitError {
        match e {
            StateError::TooLarge(m) => WitError::TooLarge(m),
            StateError::Full => WitError::Full,
            StateError::Unavailable(m) => WitError::Unavailable(m),
        }
    }
}

/// The bounds of a store.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Keys held at most.
    pub max_entries: u64,
    /// Bytes of keys, values and per-entry overhead at most.
    pub max_bytes: usize,
    /// The largest value.
    pub max_value: usize,
}

impl Bounds {
    /// Checks a key and (when there is one) a value against the bounds.
    pub fn check(&self, key: &str, value: Option<&[u8]>) -> Result<(), StateError> {
        if key.len() > MAX_KEY {
            return Err(StateError::TooLarge(format!(
                "a key of {} bytes (at most {MAX_KEY})",
                key.len()
            )));
        }
        match value {
            Some(v) if v.len() > self.max_value => Err(StateError::TooLarge(format!(
                "a value of {} bytes (state.max_value_size is {})",
                v.len(),
                self.max_value
            ))),
            _ => Ok(()),
        }
    }
}

/// Counts for `/metrics`.
#[derive(Default)]
pub struct StateStats {
    /// Writes refused: too large, full.
    pub refused: [AtomicU64; 2],
    /// Operations Redis could not answer.
    pub redis_errors: AtomicU64,
}

/// A plugin's store.
pub struct State {
    local: LocalStore,
    redis: Option<RedisState>,
    on_redis_error: OnRedisError,
    /// Its counts.
    pub stats: StateStats,
}

/// One operation.
pub enum Op<'a> {
    /// `get`.
    Get(&'a str),
    /// `set`.
    Set(&'a str, &'a [u8], Option<Duration>),
    /// `delete`.
    Delete(&'a str),
    /// `compare-and-swap`.
    Cas(
        &'a str,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Option<Duration>,
    ),
}

/// What an operation answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A value, or none.
    Value(Option<Vec<u8>>),
    /// Done (`set`).
    Done,
    /// Whether it happened (`delete`, `compare-and-swap`).
    Flag(bool),
}

impl State {
    /// The store of plugin `plugin` as `cfg` says.
    pub fn new(plugin: &str, cfg: &StateConfig) -> Arc<State> {
        let bounds = Bounds {
            max_entries: cfg.max_entries,
            max_bytes: cfg.max_bytes.0 as usize,
            max_value: cfg.max_value_size.0 as usize,
        };
        Arc::new(State {
            local: LocalStore::new(bounds),
            redis: cfg
                .redis
                .as_ref()
                .map(|r| RedisState::new(plugin, r, bounds)),
            on_redis_error: cfg.on_redis_error,
            stats: StateStats::default(),
        })
    }

    /// The local store's keys and bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.local.usage()
    }

    /// Where the store lives, for `/metrics`: `local` or Redis's `host:port/db`.
    pub fn backend(&self) -> &str {
        self.redis.as_ref().map_or("local", RedisState::shown)
    }

    /// Runs `op`: in Redis when configured (falling back as `on_redis_error` says), else here.
    pub async fn run(&self, op: Op<'_>) -> Result<Answer, StateError> {
        let r = match &self.redis {
            Some(redis) => match redis.run(&op).await {
                Ok(a) => Ok(a),
                Err(StateError::Unavailable(e)) => {
                    self.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
                    match self.on_redis_error {
                        OnRedisError::Local => self.local(op),
                        OnRedisError::Fail => Err(StateError::Unavailable(e)),
                    }
                }
                Err(e) => Err(e),
            },
            None => self.local(op),
        };
        match &r {
            Err(StateError::TooLarge(_)) => self.stats.refused[0].fetch_add(1, Ordering::Relaxed),
            Err(StateError::Full) => self.stats.refused[1].fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        r
    }

    fn local(&self, op: Op<'_>) -> Result<Answer, StateError> {
        let l = &self.local;
        Ok(match op {
            Op::Get(k) => {
                l.bounds_check(k)?;
                Answer::Value(l.get(k))
            }
            Op::Set(k, v, ttl) => l.set(k, v, ttl).map(|()| Answer::Done)?,
            Op::Delete(k) => {
                l.bounds_check(k)?;
                Answer::Flag(l.delete(k))
            }
            Op::Cas(k, e, v, ttl) => Answer::Flag(l.compare_and_swap(k, e, v, ttl)?),
        })
    }
}

#[cfg(test)]
mod tests;
