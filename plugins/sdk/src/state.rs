//! A key-value store of byte values with expiry, shared by all of a plugin's instances
//! (contract 0.2.1).
//!
//! Every instance of the plugin, on every worker, sees the same store; other plugins have
//! their own. It lives in the gateway's memory, or in Redis when the plugin's YAML says so
//! (then every replica of the gateway shares it):
//!
//! ```yaml
//! - wasm:
//!     name: authz
//!     path: plugins/build/ext_authz.wasm
//!     state: { max_entries: 10000, max_bytes: 16MiB, max_value_size: 64KiB }
//!     # or, shared by replicas: state: { redis: { url: redis://127.0.0.1:6379/0 } }
//! ```
//!
//! Shapes and units: a key is text of at most [`MAX_KEY_LEN`] bytes; a value is bytes, at
//! most the YAML's `state.max_value_size`; a time to live is rounded up to whole milliseconds
//! (`None`: kept until deleted). The store holds at most `state.max_entries` keys and
//! `state.max_bytes` of keys and values together.
//!
//! Operations fail with a [`StateError`]: `TooLarge` (a key or value over its bound), `Full`
//! (a new key, or a larger value, past `max_entries` or `max_bytes`) and `Unavailable` (Redis
//! could not be asked and `state.on_redis_error` is `fail`).
//!
//! [`compare_and_swap`] is the building block for anything that must not race: of swaps from
//! the same value made at once by several instances, workers or replicas, exactly one
//! succeeds. A counter, say:
//!
//! ```no_run
//! use synapsor_plugin_sdk::state;
//!
//! fn incr(key: &str) -> Result<u64, state::StateError> {
//!     loop {
//!         let old = state::get(key)?;
//!         let n = old.as_deref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
//!         let next = n.unwrap_or(0u64) + 1;
//!         let new = next.to_string();
//!         if state::compare_and_swap(key, old.as_deref(), Some(new.as_bytes()), None)? {
//!             return Ok(next);
//!         }
//!     }
//! }
//! ```

use std::fmt;
use std::time::Duration;

use crate::bindings::synapsor::plugin::state as wit;

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The value of `key`, or `None` when it is absent or expired.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, StateError> {
    wit::get(key).map_err(StateError::from)
}

/// Sets `key` to `value`, expiring after `ttl` (`None`: kept until deleted).
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
    wit::set(key, value, ttl.map(millis_u64)).map_err(StateError::from)
}

/// Deletes `key`; `true` when it was there.
pub fn delete(key: &str) -> Result<bool, StateError> {
    wit::delete(key).map_err(StateError::from)
}

/// Atomically: when the value of `key` is `expected` (`None`: the key is absent or expired),
/// sets it to `value` (`None`: deletes it) with `ttl` as in [`set`], and answers `true`; else
/// changes nothing and answers `false`.
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    value: Option<&[u8]>,
    ttl: Option<Duration>,
) -> Result<bool, StateError> {
    wit::compare_and_swap(key, expected, value, ttl.map(millis_u64)).map_err(StateError::from)
}

/// `d` in milliseconds, rounded up (so a short time to live is never 0), at most `u64::MAX`.
fn millis_u64(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Why a state operation failed; mirrors the contract's `state.error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The key or the value is over its bound (the text says which).
    TooLarge(String),
    /// The store holds `max_entries` keys or `max_bytes` bytes already: a new key or a larger
    /// value is refused.
    Full,
    /// The shared store (Redis) could not be asked, and `state.on_redis_error` is `fail`.
    Unavailable(String),
}

impl StateError {
    /// The kind of failure, as the contract names it: `too-large`, `full` or `unavailable`.
    pub fn kind(&self) -> &'static str {
        match self {
            StateError::TooLarge(_) => "too-large",
            StateError::Full => "full",
            StateError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<wit::Error> for StateError {
    fn from(e: wit::Error) -> StateError {
        match e {
            wit::Error::TooLarge(s) => StateError::TooLarge(s),
            wit::Error::Full => StateError::Full,
            wit::Error::Unavailable(s) => StateError::Unavailable(s),
        }
    }
}

/// `kind: detail`, or `full` alone.
impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::TooLarge(s) | StateError::Unavailable(s) => {
                write!(f, "{}: {s}", self.kind())
            }
            StateError::Full => f.write_str("full"),
        }
    }
}

impl std::error::Error for StateError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_and_saturate() {
        assert_eq!(millis_u64(Duration::ZERO), 0);
        assert_eq!(millis_u64(Duration::from_nanos(1)), 1);
        assert_eq!(millis_u64(Duration::from_millis(5000)), 5000);
        assert_eq!(millis_u64(Duration::MAX), u64::MAX);
    }

    #[test]
    fn errors_display_their_kind() {
        let e = StateError::from(wit::Error::TooLarge("value of 2 MiB".into()));
        assert_eq!(e.to_string(), "too-large: value of 2 MiB");
        assert_eq!(StateError::from(wit::Error::Full).to_string(), "full");
        let e = StateError::from(wit::Error::Unavailable("redis: refused".into()));
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            ("unavailable", "unavailable: redis: refused")
        );
    }
}
