//! A plugin's key-value store in the gateway's memory: one map behind a lock (operations are
//! short: a lookup and a copy), bounded in keys and bytes. Expired entries are dropped when
//! read, and swept all at once when the store is full (at most every [`SWEEP_EVERY`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::types::{Bounds, StateError};

/// The bytes an entry is charged beyond its key and value (the map's own bookkeeping).
pub const ENTRY_OVERHEAD: usize = 64;

/// The least time between two sweeps of a full store (a sweep walks every entry).
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    bytes: usize,
    last_sweep: Option<Instant>,
}

/// The store.
pub struct LocalStore {
    inner: Mutex<Inner>,
    bounds: Bounds,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl LocalStore {
    /// An empty store within `bounds`.
    pub fn new(bounds: Bounds) -> LocalStore {
        LocalStore {
            inner: Mutex::default(),
            bounds,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a key against the bounds.
    pub fn bounds_check(&self, key: &str) -> Result<(), StateError> {
        self.bounds.check(key, None)
    }

    /// Keys held (expired ones not swept yet included) and their bytes, overhead included.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    /// Sets `key` to `value`, expiring after `ttl`.
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        self.bounds.check(key, Some(value))?;
        let mut inner = self.lock();
        self.put(&mut inner, key, value, ttl)
    }

    /// Deletes `key`; true when it was there (and live).
    pub fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.remove(key).is_some_and(|e| e.live(now))
    }

    /// Sets (or, for `None`, deletes) `key` when its live value is `expected`.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        self.bounds.check(key, value)?;
        let now = Instant::now();
        let mut inner = self.lock();
        let current = inner.map.get(key).filter(|e| e.live(now));
        if current.map(|e| e.value.as_slice()) != expected {
            return Ok(false);
        }
        match value {
            Some(v) => self.put(&mut inner, key, v, ttl)?,
            None => {
                inner.remove(key);
            }
        }
        Ok(true)
    }

    /// Inserts or replaces under the lock, within the bounds.
    fn put(
        &self,
        inner: &mut Inner,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let old = inner.map.get(key).map_or(0, |e| cost(key, &e.value));
        let new = cost(key, value);
        let fits = |i: &Inner| {
            let entries_ok = old > 0 || (i.map.len() as u64) < self.bounds.max_entries;
            entries_ok && i.bytes - old + new <= self.bounds.max_bytes
        };
        if !fits(inner) {
            inner.sweep(now);
            if !fits(inner) {
                return Err(StateError::Full);
            }
        }
        let expires = ttl.map(|t| now + t);
        let entry = Entry {
            value: value.to_vec(),
            expires,
        };
        inner.bytes = inner.bytes - old + new;
        inner.map.insert(key.to_string(), entry);
        Ok(())
    }
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.bytes -= cost(key, &e.value);
        Some(e)
    }

    /// Drops every expired entry, unless the last sweep was less than [`SWEEP_EVERY`] ago.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|t| now - t < SWEEP_EVERY) {
            return;
        }
        self.last_sweep = Some(now);
        let mut freed = 0;
        self.map.retain(|k, e| {
            let keep = e.live(now);
            if !keep {
                freed += cost(k, &e.value);
            }
            keep
        });
        self.bytes -= freed;
    }
}
