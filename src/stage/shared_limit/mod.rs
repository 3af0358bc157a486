//! `rate_limit` with `backend: { redis: … }`: one GCRA bucket per key shared by every gateway
//! replica, kept in Redis and taken from with one script call per admitted call (or per
//! `local_allowance` calls). When Redis fails or is slow, `on_backend_error` decides: admit,
//! refuse with UNAVAILABLE, or apply the same limit in this process alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use tower::{Layer, Service};

use super::{KeyError, Keyer, RateLimitLayer};
use crate::clock;
use crate::config::{LimitBackend, OnBackendError, RateLimitConfig};
use crate::grpc::Code;
use crate::redis_store::Verdict;
pub use crate::redis_store::{RedisStore, StoreMetrics};
use crate::stack::Rejected;
use crate::stack::{BoxError, Request, Response};

struct Inner {
    store: Arc<RedisStore>,
    keyer: Keyer,
    prefix: String,
    interval: Duration,
    burst: u32,
    allowance: u32,
    per_ms: u64,
    /// Calls taken from Redis ahead and not used yet: key → (left, lapse time in ms).
    banked: DashMap<String, (u32, u64)>,
    max_keys: usize,
    last_sweep: AtomicU64,
    on_error: OnBackendError,
    local: RateLimitLayer,
    name: String,
}

/// The layer of one shared `rate_limit` stage.
#[derive(Clone)]
pub struct SharedLimitLayer {
    inner: Arc<Inner>,
}

impl SharedLimitLayer {
    /// The stage of `cfg` (whose `backend` is set) at position `index` of listener
    /// `listener`'s chain.
    pub fn new(
        cfg: &RateLimitConfig,
        backend: &LimitBackend,
        listener: &str,
        index: usize,
    ) -> Self {
        let burst = cfg.burst.unwrap_or(cfg.rate);
        let store = RedisStore::new(&backend.redis, backend.pool_size, backend.timeout.0);
        SharedLimitLayer {
            inner: Arc::new(Inner {
                prefix: backend
                    .key_prefix
                    .clone()
                    .unwrap_or_else(|| format!("synapsor:rl:{listener}:{index}:")),
                store,
                keyer: Keyer::new(&cfg.key, cfg.missing_key, &cfg.methods),
                interval: cfg.per.0 / cfg.rate,
                burst,
                allowance: backend.local_allowance,
                per_ms: cfg.per.0.as_millis() as u64,
                banked: DashMap::new(),
                max_keys: cfg.max_keys,
                last_sweep: AtomicU64::new(0),
                on_error: cfg.on_backend_error,
                local: RateLimitLayer::new(cfg),
                name: format!(
                    "shared rate limit of {} per {} (burst {burst})",
                    cfg.rate, cfg.per
                ),
            }),
        }
    }

    /// The store, for metrics (labelled `stage`).
    pub fn store(&self) -> Arc<RedisStore> {
        self.inner.store.clone()
    }
}

impl Inner {
    fn bank_take(&self, key: &str) -> bool {
        let now = clock::now_ms();
        match self.banked.get_mut(key) {
            Some(mut e) if e.0 > 0 && e.1 > now => {
                e.0 -= 1;
                true
            }
            _ => false,
        }
    }

    fn bank_put(&self, key: String, n: u32) {
        if self.banked.len() >= self.max_keys {
            if clock::due(&self.last_sweep, 1000) {
                let now = clock::now_ms();
                self.banked.retain(|_, v| v.0 > 0 && v.1 > now);
            }
            if self.banked.len() >= self.max_keys {
                return;
            }
        }
        self.banked.insert(key, (n, clock::now_ms() + self.per_ms));
    }

    /// The bucket key of a call, or `None` when the limit does not apply to it.
    fn key_of(&self, req: &Request) -> Result<Option<String>, Rejected> {
        if !self.keyer.applies(req) {
            return Ok(None);
        }
        self.keyer
            .key(req)
            .map(Some)
            .map_err(|KeyError::Missing(name)| {
                Rejected::new(
                    Code::Unauthenticated,
                    format!("missing metadata {name:?}, the key of the {}", self.name),
                )
            })
    }

    async fn admit(&self, key: String) -> Result<(), Rejected> {
        if self.allowance > 1 && self.bank_take(&key) {
            return Ok(());
        }
        let redis_key = format!("{}{key}", self.prefix);
        let mut cost = self.allowance.max(1);
        loop {
            match self
                .store
                .take(&redis_key, self.interval, self.burst, cost)
                .await
            {
                Ok(Verdict::Admit) => {
                    if cost > 1 {
                        self.bank_put(key, cost - 1);
                    }
                    return Ok(());
                }
                // A batch did not fit: one call may still.
                Ok(Verdict::Refuse(_)) if cost > 1 => cost = 1,
                Ok(Verdict::Refuse(wait)) => {
                    return Err(Rejected::exhausted(
                        format!("{} exceeded ({})", self.name, self.keyer.describe(&key)),
                        Some((wait.as_millis() as u64).max(1)),
                    ))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "shared rate limit: store failed");
                    return match self.on_error {
                        OnBackendError::Allow => Ok(()),
                        OnBackendError::Deny => Err(Rejected::new(
                            Code::Unavailable,
                            format!("{}: its store cannot be asked ({e})", self.name),
                        )),
                        OnBackendError::Local => self.local.check_key(key),
                    };
                }
            }
        }
    }
}

impl<S> Layer<S> for SharedLimitLayer {
    type Service = SharedLimit<S>;

    fn layer(&self, inner: S) -> SharedLimit<S> {
        SharedLimit {
            svc: inner,
            limit: self.inner.clone(),
        }
    }
}

/// The service of a shared `rate_limit` stage around `S`.
#[derive(Clone)]
pub struct SharedLimit<S> {
    svc: S,
    limit: Arc<Inner>,
}

impl<S> Service<Request> for SharedLimit<S>
where
    S: Service<Request, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.svc.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was polled ready takes the call; a fresh clone waits for the next.
        let fresh = self.svc.clone();
        let mut svc = std::mem::replace(&mut self.svc, fresh);
        let limit = self.limit.clone();
        let key = match limit.key_of(&req) {
            Ok(Some(k)) => k,
            Ok(None) => return Box::pin(svc.call(req)),
            Err(r) => return Box::pin(std::future::ready(Err(r.by("rate_limit").into()))),
        };
        Box::pin(async move {
            match limit.admit(key).await {
                Ok(()) => svc.call(req).await,
                Err(r) => Err(r.by("rate_limit").into()),
            }
        })
    }
}
