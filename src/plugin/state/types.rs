//! What the plugin's store and its two backends share: the bounds, the errors, and one
//! operation and its answer.

use std::time::Duration;

use super::super::bindings::StateError as WitError;

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
