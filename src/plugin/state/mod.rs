//! A plugin's shared state (`state` in `wit/plugin.wit`): byte values with an optional expiry,
//! scoped to the plugin and shared by all its instances on all workers. In the gateway's memory
//! ([`local`]), or in Redis ([`redis`]) so replicas share it, with this gateway's own store or an
//! error while Redis cannot be asked (`on_redis_error`).

pub mod local;
pub mod redis;
mod types;

pub use types::{Answer, Bounds, Op, StateError, MAX_KEY};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{OnRedisError, StateConfig};
use local::LocalStore;
use redis::RedisState;

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

    /// Whether it lives in Redis (its operations may wait).
    pub fn in_redis(&self) -> bool {
        self.redis.is_some()
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
