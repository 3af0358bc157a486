//! `rate_limit`: governor's GCRA buckets, one per key, with bounded key state. A call over the
//! limit gets RESOURCE_EXHAUSTED naming the limit, and `grpc-retry-pushback-ms` says when the
//! next call would be admitted. The clock is a parameter, so tests run on governor's fake clock.

use std::num::NonZeroU32;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

use super::{Check, KeyError, Keyer};
use crate::clock;
use crate::config::RateLimitConfig;
use crate::grpc::Code;
use crate::stack::Rejected;
use crate::stack::Request;

/// The key all calls share once `max_keys` keys are tracked.
const OVERFLOW: &str = "\u{0}overflow";

type Limiter<C> = governor::RateLimiter<
    String,
    DashMapStateStore<String>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

struct Shared<C: Clock> {
    limiter: Limiter<C>,
    clock: C,
    keyer: Keyer,
    max_keys: usize,
    /// When idle keys were last evicted (ms on [`clock::now_ms`]).
    last_sweep: AtomicU64,
    name: String,
}

/// The layer of one `rate_limit` stage.
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl RateLimitLayer {
    /// A limiter on the real clock.
    pub fn new(cfg: &RateLimitConfig) -> RateLimitLayer {
        RateLimitLayer::with_clock(cfg, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimitLayer<C> {
    /// A limiter on `clock` (tests pass governor's `FakeRelativeClock`).
    pub fn with_clock(cfg: &RateLimitConfig, clock: C) -> RateLimitLayer<C> {
        let period = cfg.per.0 / cfg.rate;
        let burst = NonZeroU32::new(cfg.burst.unwrap_or(cfg.rate)).expect("validated burst");
        let quota = Quota::with_period(period)
            .expect("validated period")
            .allow_burst(burst);
        RateLimitLayer {
            shared: Arc::new(Shared {
                limiter: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
                clock,
                keyer: Keyer::new(&cfg.key, cfg.missing_key, &cfg.methods),
                max_keys: cfg.max_keys,
                last_sweep: AtomicU64::new(0),
                name: format!(
                    "rate limit of {} per {} (burst {})",
                    cfg.rate,
                    cfg.per,
                    burst.get()
                ),
            }),
        }
    }

    /// Admits or rejects one call.
    pub fn check(&self, req: &Request) -> Result<(), Rejected> {
        let s = &self.shared;
        if !s.keyer.applies(req) {
            return Ok(());
        }
        let key = s.keyer.key(req).map_err(|KeyError::Missing(name)| {
            Rejected::new(
                Code::Unauthenticated,
                format!("missing metadata {name:?}, the key of the {}", s.name),
            )
        })?;
        self.check_key(key)
    }

    /// Admits or rejects one call whose bucket key is `key`.
    pub fn check_key(&self, mut key: String) -> Result<(), Rejected> {
        let s = &self.shared;
        if s.limiter.len() >= s.max_keys {
            // Evict idle keys, at most once a second; while still full, new calls share one
            // bucket, so key state never grows past the bound.
            if clock::due(&s.last_sweep, 1000) {
                s.limiter.retain_recent();
                s.limiter.shrink_to_fit();
            }
            if s.limiter.len() >= s.max_keys {
                key = OVERFLOW.to_string();
            }
        }
        match s.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(s.clock.now());
                let who = if key == OVERFLOW {
                    "overflow".to_string()
                } else {
                    s.keyer.describe(&key)
                };
                Err(Rejected::exhausted(
                    format!("{} exceeded ({who})", s.name),
                    Some((wait.as_millis() as u64).max(1)),
                ))
            }
        }
    }
}

impl<C: Clock + Clone> Check for RateLimitLayer<C> {
    const KIND: &'static str = "rate_limit";

    fn check(&self, req: &mut Request) -> Result<(), Rejected> {
        RateLimitLayer::check(self, req)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::config::{Dur, KeySpec, MissingKey};
    use crate::stack::Body;
    use crate::stack::PeerAddr;

    fn cfg(rate: u32, burst: Option<u32>, key: KeySpec) -> RateLimitConfig {
        RateLimitConfig {
            rate,
            per: Dur::secs(1),
            burst,
            key,
            methods: vec![],
            max_keys: 3,
            missing_key: MissingKey::Reject,
            backend: None,
            on_backend_error: Default::default(),
        }
    }

    fn req(path: &str, peer: &str, tenant: Option<&str>) -> Request {
        let mut b = http::Request::post(path);
        if let Some(t) = tenant {
            b = b.header("x-tenant", t);
        }
        let mut r = b.body(Body::empty()).unwrap();
        r.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        r
    }

    #[test]
    fn admits_exactly_the_burst_then_the_rate() {
        let clock = FakeRelativeClock::default();
        let l = RateLimitLayer::with_clock(&cfg(10, Some(5), KeySpec::Global), clock.clone());
        let r = req("/a.B/C", "1.2.3.4:5", None);
        for _ in 0..5 {
            l.check(&r).expect("within the burst");
        }
        let rej = l.check(&r).expect_err("past the burst");
        assert_eq!(rej.code, Code::ResourceExhausted);
        assert!(
            rej.message.contains("rate limit of 10 per 1s (burst 5)"),
            "{}",
            rej.message
        );
        assert_eq!(rej.retry_pushback_ms, Some(100));
        assert_eq!(rej.trailers()["grpc-retry-pushback-ms"], "100");
        // 10 per second: one more every 100 ms, never two.
        clock.advance(Duration::from_millis(100));
        l.check(&r).expect("replenished");
        l.check(&r).expect_err("only one");
        clock.advance(Duration::from_millis(350));
        for _ in 0..3 {
            l.check(&r).expect("three after 350 ms");
        }
        l.check(&r).expect_err("not four");
    }

    #[test]
    fn keys_are_isolated_and_bounded() {
        let clock = FakeRelativeClock::default();
        let l = RateLimitLayer::with_clock(&cfg(1, Some(1), KeySpec::PeerIp), clock.clone());
        l.check(&req("/a.B/C", "10.0.0.1:1", None)).unwrap();
        l.check(&req("/a.B/C", "10.0.0.1:2", None))
            .expect_err("same IP, other port");
        l.check(&req("/a.B/C", "10.0.0.2:1", None))
            .expect("another IP has its own bucket");
        l.check(&req("/a.B/C", "10.0.0.3:1", None)).unwrap();
        // max_keys is 3: a fourth client shares the overflow bucket.
        l.check(&req("/a.B/C", "10.0.0.4:1", None)).unwrap();
        let rej = l.check(&req("/a.B/C", "10.0.0.5:1", None)).unwrap_err();
        assert!(rej.message.contains("overflow"), "{}", rej.message);
        assert!(l.shared.limiter.len() <= 4);
    }

    #[test]
    fn missing_metadata_key_and_method_patterns() {
        let clock = FakeRelativeClock::default();
        let mut c = cfg(1, Some(1), KeySpec::Metadata("x-tenant".into()));
        c.methods = vec!["/a.B/*".into()];
        let l = RateLimitLayer::with_clock(&c, clock);
        let rej = l.check(&req("/a.B/C", "1.1.1.1:1", None)).unwrap_err();
        assert_eq!(rej.code, Code::Unauthenticated);
        l.check(&req("/a.B/C", "1.1.1.1:1", Some("gold"))).unwrap();
        l.check(&req("/a.B/C", "1.1.1.1:1", Some("gold")))
            .unwrap_err();
        l.check(&req("/a.B/C", "1.1.1.1:1", Some("blue"))).unwrap();
        // Other services are not limited at all.
        for _ in 0..10 {
            l.check(&req("/x.Y/Z", "1.1.1.1:1", None)).unwrap();
        }
    }
}
