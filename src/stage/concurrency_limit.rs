//! `concurrency_limit`: at most `max` calls in flight per key. A call holds its slot until its
//! response body ends or is dropped, so an open stream counts for as long as it is open. Counts
//! live in a sharded map (dashmap) bounded by `max_keys`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::observe::{End, ObserveLayer, Observer};
use super::{KeyError, Keyer};
use crate::clock;
use crate::config::ConcurrencyLimitConfig;
use crate::grpc::Code;
use crate::stack::{Rejected, Request};

struct Shared {
    max: usize,
    keyer: Keyer,
    max_keys: usize,
    /// The `global` key (and shared missing metadata): no map lookup.
    global: Arc<AtomicUsize>,
    /// Every call of a key past `max_keys` counts here.
    overflow: Arc<AtomicUsize>,
    counts: DashMap<String, Arc<AtomicUsize>>,
    last_sweep: AtomicU64,
}

/// One `concurrency_limit` stage.
#[derive(Clone)]
pub struct ConcurrencyLimitStage {
    shared: Arc<Shared>,
}

/// The layer of a `concurrency_limit` stage.
pub type ConcurrencyLimitLayer = ObserveLayer<ConcurrencyLimitStage>;

/// A slot held by a call; dropping it frees the slot.
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimitStage {
    /// From the YAML.
    pub fn new(cfg: &ConcurrencyLimitConfig) -> ConcurrencyLimitStage {
        ConcurrencyLimitStage {
            shared: Arc::new(Shared {
                max: cfg.max,
                keyer: Keyer::new(&cfg.key, cfg.missing_key, &cfg.methods),
                max_keys: cfg.max_keys,
                global: Arc::default(),
                overflow: Arc::default(),
                counts: DashMap::new(),
                last_sweep: AtomicU64::new(0),
            }),
        }
    }

    /// Takes a slot for this call, `Ok(None)` when the stage does not apply to it.
    pub fn acquire(&self, req: &Request) -> Result<Option<Permit>, Rejected> {
        let s = &self.shared;
        if !s.keyer.applies(req) {
            return Ok(None);
        }
        let key = s.keyer.key(req).map_err(|KeyError::Missing(name)| {
            Rejected::new(
                Code::Unauthenticated,
                format!("missing metadata {name:?}, the key of a concurrency limit"),
            )
        })?;
        let counter = if key.is_empty() {
            s.global.clone()
        } else {
            self.counter(&key)
        };
        if counter.fetch_add(1, Ordering::AcqRel) >= s.max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::exhausted(
                format!(
                    "concurrency limit of {} calls in flight reached ({})",
                    s.max,
                    s.keyer.describe(&key)
                ),
                None,
            ));
        }
        Ok(Some(Permit(counter)))
    }

    fn counter(&self, key: &str) -> Arc<AtomicUsize> {
        let s = &self.shared;
        if let Some(c) = s.counts.get(key) {
            return c.clone();
        }
        if s.counts.len() >= s.max_keys {
            // Drop keys with nothing in flight, at most once a second.
            if clock::due(&s.last_sweep, 1000) {
                s.counts.retain(|_, c| c.load(Ordering::Acquire) > 0);
            }
            if s.counts.len() >= s.max_keys {
                return s.overflow.clone();
            }
        }
        s.counts.entry(key.to_string()).or_default().clone()
    }
}

/// The call holds its slot until it ends, however it ends (a stream counts for as long as it
/// is open).
impl Observer for ConcurrencyLimitStage {
    type Call = Permit;

    fn start(&self, req: &mut Request) -> Result<Option<Permit>, Rejected> {
        self.acquire(req).map_err(|r| r.by("concurrency_limit"))
    }

    fn end(&self, permit: Permit, _: End<'_>) {
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeySpec, MissingKey};

    fn req(tenant: &str) -> Request {
        http::Request::post("/a.B/C")
            .header("x-tenant", tenant)
            .body(crate::stack::Body::empty())
            .unwrap()
    }

    #[test]
    fn slots_are_per_key_and_freed_when_dropped() {
        let l = ConcurrencyLimitStage::new(&ConcurrencyLimitConfig {
            max: 2,
            key: KeySpec::Metadata("x-tenant".into()),
            methods: vec![],
            max_keys: 2,
            missing_key: MissingKey::Shared,
        });
        let a1 = l.acquire(&req("a")).unwrap();
        let _a2 = l.acquire(&req("a")).unwrap();
        let rej = l.acquire(&req("a")).err().expect("third of a");
        assert_eq!(rej.code, Code::ResourceExhausted);
        assert!(
            rej.message.contains("concurrency limit of 2"),
            "{}",
            rej.message
        );
        let _b1 = l.acquire(&req("b")).unwrap();
        drop(a1);
        l.acquire(&req("a")).unwrap().expect("a slot came back");
        // max_keys 2: a third key counts in the shared overflow.
        let _c = l.acquire(&req("c")).unwrap();
        assert_eq!(l.shared.counts.len(), 2);
    }
}
