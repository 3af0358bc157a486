//! A plugin's store in Redis, shared by every replica: keys `PREFIX` + the plugin's key,
//! through the gateway's Redis client (the rate limit's: multiplexed connections, a timeout
//! per request, a pause after a failure). `compare-and-swap` is one Lua script, atomic on the
//! server. Key and value sizes are checked here; how much Redis holds in all is Redis's own
//! bound (`maxmemory`), not the gateway's memory.

use std::sync::{Arc, LazyLock};

use redis::AsyncCommands;

use super::types::{Answer, Bounds, Op, StateError};
use crate::config::StateRedis;
use crate::redis_store::RedisStore;

/// KEYS[1]: the key. ARGV: expected present (`1`/`0`), expected value, new present (`1`/`0`),
/// new value, TTL in milliseconds (`0` for none). Returns 1 when swapped, 0 when not.
const CAS: &str = r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CAS));

/// The Redis side of a plugin's store.
pub struct RedisState {
    store: Arc<RedisStore>,
    prefix: String,
    bounds: Bounds,
}

/// A TTL in whole milliseconds, at least 1 (a TTL of 0 would mean "no expiry" to the script).
fn ttl_ms(ttl: Option<std::time::Duration>) -> u64 {
    ttl.map_or(0, |t| (t.as_millis() as u64).max(1))
}

impl RedisState {
    /// The store of plugin `plugin` in the Redis `cfg` names (connections open in the
    /// background).
    pub fn new(plugin: &str, cfg: &StateRedis, bounds: Bounds) -> RedisState {
        RedisState {
            store: RedisStore::new(&cfg.url, cfg.pool_size, cfg.timeout.0),
            prefix: cfg
                .key_prefix
                .clone()
                .unwrap_or_else(|| format!("synapsor:state:{plugin}:")),
            bounds,
        }
    }

    /// Runs one operation; `Unavailable` when Redis could not be asked.
    pub async fn run(&self, op: &Op<'_>) -> Result<Answer, StateError> {
        let key = |k: &str| format!("{}{k}", self.prefix);
        let s = &self.store;
        let r = match *op {
            Op::Get(k) => {
                self.bounds.check(k, None)?;
                let k = key(k);
                s.query(|mut c| async move { c.get::<_, Option<Vec<u8>>>(k).await })
                    .await
                    .map(Answer::Value)
            }
            Op::Set(k, v, ttl) => {
                self.bounds.check(k, Some(v))?;
                let (k, v, ms) = (key(k), v.to_vec(), ttl_ms(ttl));
                s.query(|mut c| async move {
                    match ms {
                        0 => c.set::<_, _, ()>(k, v).await,
                        ms => c.pset_ex::<_, _, ()>(k, v, ms).await,
                    }
                })
                .await
                .map(|()| Answer::Done)
            }
            Op::Delete(k) => {
                self.bounds.check(k, None)?;
                let k = key(k);
                s.query(|mut c| async move { c.del::<_, i64>(k).await })
                    .await
                    .map(|n| Answer::Flag(n > 0))
            }
            Op::Cas(k, expected, value, ttl) => {
                self.bounds.check(k, value)?;
                let mut call = SCRIPT.key(key(k));
                call.arg(u8::from(expected.is_some()))
                    .arg(expected.unwrap_or_default())
                    .arg(u8::from(value.is_some()))
                    .arg(value.unwrap_or_default())
                    .arg(ttl_ms(ttl));
                s.query(|mut c| async move { call.invoke_async::<i64>(&mut c).await })
                    .await
                    .map(|n| Answer::Flag(n == 1))
            }
        };
        r.map_err(StateError::Unavailable)
    }
}
