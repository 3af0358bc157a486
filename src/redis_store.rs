//! The gateway's Redis client, used by shared rate limits and plugins' shared state: a few
//! multiplexed connections driven by one background thread of the gateway, a timeout per
//! request, a pause after a failure, reconnection, and latency/error metrics; the rate limit's
//! GCRA script (one round trip, on Redis's clock).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Handle;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::clock;
use crate::telemetry::{encode_family, Label, Named, Registry, Sample};

/// After a failure, Redis is not asked again for this long (calls get the fallback at once).
const RETRY_AFTER_MS: u64 = 500;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 10] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// GCRA in microseconds on Redis's clock. ARGV: emission interval, burst, calls taken.
/// Returns {1, 0} when admitted, {0, microseconds until it would be}.
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local over = new_tat - now - interval * burst
if over > 0 then
  return {0, math.ceil(over)}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// The runtime every Redis connection of the process runs on (one thread).
fn runtime() -> &'static Handle {
    static RT: OnceLock<Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("synapsor-redis".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("redis runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("redis thread");
        rx.recv().expect("redis runtime started")
    })
}

/// What Redis said about a call.
pub enum Verdict {
    /// Admitted.
    Admit,
    /// Refused; the bucket admits again after this long.
    Refuse(Duration),
}

/// A Redis server used as a shared bucket store.
pub struct RedisStore {
    /// `host:port/db`, without credentials, for logs and metrics.
    pub shown: String,
    conns: ArcSwapOption<Vec<ConnectionManager>>,
    next: AtomicUsize,
    timeout: Duration,
    down_until: AtomicU64,
    /// Since the last failure to reach it, until it answers again (for the log).
    failing: std::sync::atomic::AtomicBool,
    ok: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_nanos: AtomicU64,
}

impl RedisStore {
    /// A store for `url` (validated) whose `pool_size` connections are opened in the
    /// background, and reopened until they work.
    pub fn new(url: &str, pool_size: usize, timeout: Duration) -> Arc<RedisStore> {
        let client = redis::Client::open(url).expect("validated redis URL");
        let info = client.get_connection_info();
        let shown = format!("{}/{}", info.addr, info.redis.db);
        let store = Arc::new(RedisStore {
            shown,
            conns: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            timeout,
            down_until: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
        });
        runtime().spawn(connect(Arc::downgrade(&store), client, pool_size, timeout));
        store
    }

    /// Takes `cost` calls from the bucket `key` (GCRA: one call per `interval`, `burst` at
    /// once). An error means Redis could not be asked (down, slow, not connected yet).
    pub async fn take(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        cost: u32,
    ) -> Result<Verdict, String> {
        let mut call = SCRIPT.key(key);
        call.arg(interval.as_micros() as u64).arg(burst).arg(cost);
        let (admitted, wait_us) = self
            .query(|mut conn| async move { call.invoke_async::<(i64, i64)>(&mut conn).await })
            .await?;
        Ok(match admitted {
            1 => Verdict::Admit,
            _ => Verdict::Refuse(Duration::from_micros(wait_us.max(1) as u64)),
        })
    }

    /// Runs one request on one of the connections, within the store's timeout, counted in its
    /// metrics. An error means Redis could not be asked or failed the request (down, slow, not
    /// connected yet, or within the pause after a failure); the text names the server.
    pub async fn query<T, F, Fut>(&self, request: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if clock::now_ms() < self.down_until.load(Ordering::Relaxed) {
            return Err(format!("redis {} failed recently", self.shown));
        }
        let Some(conns) = self.conns.load_full() else {
            return Err(format!("not connected to redis {} yet", self.shown));
        };
        let conn = conns[self.next.fetch_add(1, Ordering::Relaxed) % conns.len()].clone();
        let started = Instant::now();
        // Only a failure to reach Redis (not an error it answered, such as a bad argument)
        // pauses the store.
        let (result, unreachable) = match tokio::time::timeout(self.timeout, request(conn)).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                let unreachable = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal();
                (Err(format!("redis {}: {e}", self.shown)), unreachable)
            }
            Err(_) => (
                Err(format!(
                    "redis {} did not answer within {:?}",
                    self.shown, self.timeout
                )),
                true,
            ),
        };
        self.observe(started.elapsed(), result.is_ok());
        self.reachable(!unreachable, result.as_ref().err());
        result
    }

    /// Notes whether Redis was reached: after a failure to reach it, it is not asked for
    /// [`RETRY_AFTER_MS`]; the first failure and the first success after failures are logged.
    fn reachable(&self, reached: bool, error: Option<&String>) {
        if reached {
            if self.failing.swap(false, Ordering::Relaxed) {
                tracing::info!(redis = %self.shown, "redis answers again");
            }
            return;
        }
        self.down_until
            .store(clock::now_ms() + RETRY_AFTER_MS, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(redis = %self.shown, error = error.map_or("", String::as_str),
                "redis cannot be reached; shared rate limits use on_backend_error and plugin state on_redis_error, asking again every {RETRY_AFTER_MS} ms");
        }
    }

    fn observe(&self, d: Duration, ok: bool) {
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.ok.fetch_add(1, Ordering::Relaxed);
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Opens the connections, retrying every second while the store is in use.
async fn connect(store: Weak<RedisStore>, client: redis::Client, n: usize, timeout: Duration) {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout.max(Duration::from_secs(1)))
        .set_response_timeout(timeout)
        .set_number_of_retries(2)
        .set_max_delay(1000);
    let mut warned = false;
    loop {
        let Some(s) = store.upgrade() else { return };
        let mut conns = Vec::with_capacity(n);
        let mut failed = None;
        for _ in 0..n {
            match ConnectionManager::new_with_config(client.clone(), cfg.clone()).await {
                Ok(c) => conns.push(c),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                tracing::info!(redis = %s.shown, connections = n, "connected to redis");
                s.conns.store(Some(Arc::new(conns)));
                return;
            }
            Some(e) if !warned => {
                warned = true;
                tracing::warn!(redis = %s.shown, error = %e,
                    "cannot connect to redis; shared rate limits use on_backend_error and plugin state on_redis_error until it answers");
            }
            Some(_) => {}
        }
        drop(s);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every shared rate limit's store of a gateway, by stage (`listener:index`), for `/metrics`:
/// `synapsor_rate_limit_backend_requests_total{stage,backend,result}` and the round-trip
/// histogram `synapsor_rate_limit_backend_seconds{stage,backend}`.
#[derive(Clone, Default)]
pub struct StoreMetrics(Named<RedisStore>);

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreMetrics")
    }
}

impl StoreMetrics {
    /// Shows `store`'s metrics labelled with `stage`; a stage rebuilt by a reload replaces the
    /// one before it.
    pub fn add(registry: &Registry, stage: String, store: Arc<RedisStore>) {
        let all = registry.collector("rate_limit_backends", StoreMetrics::default);
        all.0.put(stage.into(), store);
    }
}

impl Collector for StoreMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let all = self.0.all();
        let labels = |stage: &str, s: &RedisStore| {
            [
                ("stage", Label::from(stage)),
                ("backend", Label::from(&*s.shown)),
            ]
        };
        encode_family(
            &mut encoder,
            "synapsor_rate_limit_backend_requests",
            "Requests to a shared rate limit's store, by result.",
            MetricType::Counter,
            all.iter().flat_map(|(stage, s)| {
                [("ok", &s.ok), ("error", &s.errors)].map(|(result, n)| {
                    let [a, b] = labels(stage, s);
                    let value = Sample::Counter(n.load(Ordering::Relaxed));
                    ([a, b, ("result", Label::from(result))], value)
                })
            }),
        )?;
        let counts: Vec<Vec<u64>> = all
            .iter()
            .map(|(_, s)| {
                s.buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect()
            })
            .collect();
        encode_family(
            &mut encoder,
            "synapsor_rate_limit_backend_seconds",
            "Round trips of answered requests to a shared rate limit's store.",
            MetricType::Histogram,
            all.iter().zip(&counts).map(|((stage, s), counts)| {
                let value = Sample::Histogram {
                    bounds: &BUCKETS,
                    counts,
                    count: s.ok.load(Ordering::Relaxed),
                    sum: s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                };
                (labels(stage, s), value)
            }),
        )
    }
}
