//! `metrics`: counts every call the way go-grpc-prometheus does — `grpc_server_started_total`,
//! `grpc_server_handled_total{grpc_code}`, `grpc_server_handling_seconds` — plus calls in flight
//! and `synapsor_interceptor_rejected_total{stage,plugin,reason}` for calls later stages refused
//! (`plugin` names the plugin of a `wasm` stage, empty for built-in stages). The
//! status is read where it really is: the trailers (or a trailers-only head); a call the client
//! abandons counts as CANCELLED. Label sets are bounded: past `max_methods` distinct methods, new
//! ones count as `other`. [`Registry::render`] writes the Prometheus text for `/metrics`.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use dashmap::DashMap;
use tower::{Layer, Service};

use crate::config::MetricsConfig;
use crate::grpc::{status_code, Code, Framing};
use crate::stack::{status_of, BoxError, Request, Response, Seen, Watch};
use crate::stack::{Rejected, UpstreamGroup};

/// Upper bounds of the handling-time histogram, in seconds (Prometheus' defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Names of the gRPC codes 0..=16, for the `grpc_code` label.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

#[derive(Default)]
struct Series {
    started: AtomicU64,
    msg_received: AtomicU64,
    msg_sent: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    handled: [AtomicU64; 17],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// (listener, stage, plugin or "", reason) of a refused call.
type RejectedKey = (Arc<str>, &'static str, Arc<str>, &'static str);

/// Every metric of the gateway's stages, shared by all listeners and workers.
#[derive(Default)]
pub struct Registry {
    /// (listener, grpc_service, grpc_method) → counts.
    series: DashMap<(Arc<str>, String, String), Arc<Series>>,
    /// (listener, stage, plugin or "", reason) → refused calls.
    rejected: DashMap<RejectedKey, AtomicU64>,
    /// listener → calls in flight.
    in_flight: DashMap<Arc<str>, Arc<AtomicI64>>,
    /// (listener, upstream, code) → calls an upstream group answered.
    upstream_handled: DashMap<(Arc<str>, Arc<str>, usize), AtomicU64>,
    /// Each plugin's name and counters.
    plugins: std::sync::Mutex<Vec<(Arc<str>, Arc<crate::plugin::Stats>)>>,
    /// Each shared rate limit's store, by stage (`listener:index`).
    limit_stores: std::sync::Mutex<Vec<(String, Arc<super::shared_limit::RedisStore>)>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Adds a plugin's counters to what [`Registry::render`] shows; a plugin loaded again by a
    /// reload (plugin names are unique in a config) replaces the one before it, so `/metrics`
    /// never shows a series twice.
    pub fn add_plugin(&self, name: Arc<str>, stats: Arc<crate::plugin::Stats>) {
        let mut all = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(n, _)| *n != name);
        all.push((name, stats));
    }

    /// Adds a shared rate limit's store to what [`Registry::render`] shows; a stage rebuilt by
    /// a reload replaces the one before it.
    pub fn add_limit_store(&self, stage: String, store: Arc<super::shared_limit::RedisStore>) {
        let mut all = self.limit_stores.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(s, _)| *s != stage);
        all.push((stage, store));
    }

    /// The Prometheus text exposition of everything counted so far.
    pub fn render(&self, out: &mut String) {
        super::shared_limit::render(
            &self.limit_stores.lock().unwrap_or_else(|p| p.into_inner()),
            out,
        );
        crate::plugin::render_stats(&self.plugins.lock().unwrap_or_else(|p| p.into_inner()), out);
        let mut rows: Vec<_> = self
            .series
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let labels = |k: &(Arc<str>, String, String)| {
            format!(
                "listener=\"{}\",grpc_service=\"{}\",grpc_method=\"{}\"",
                escape(&k.0),
                escape(&k.1),
                escape(&k.2)
            )
        };
        out.push_str("# HELP grpc_server_started_total Calls started.\n# TYPE grpc_server_started_total counter\n");
        for (k, s) in &rows {
            let _ = writeln!(
                out,
                "grpc_server_started_total{{{}}} {}",
                labels(k),
                s.started.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP grpc_server_handled_total Calls finished, by status.\n# TYPE grpc_server_handled_total counter\n");
        for (k, s) in &rows {
            for (code, n) in s.handled.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "grpc_server_handled_total{{{},grpc_code=\"{}\"}} {n}",
                        labels(k),
                        CODE_NAMES[code]
                    );
                }
            }
        }
        out.push_str("# HELP grpc_server_handling_seconds Time from the call's start to its status.\n# TYPE grpc_server_handling_seconds histogram\n");
        for (k, s) in &rows {
            write_histogram(
                out,
                "grpc_server_handling_seconds",
                &labels(k),
                &BUCKETS,
                &s.buckets,
                s.count.load(Ordering::Relaxed),
                s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            );
        }
        for (name, help, get) in [
            (
                "grpc_server_msg_received_total",
                "Messages received from clients.",
                0,
            ),
            ("grpc_server_msg_sent_total", "Messages sent to clients.", 1),
            (
                "synapsor_bytes_received_total",
                "Message bytes received from clients.",
                2,
            ),
            (
                "synapsor_bytes_sent_total",
                "Message bytes sent to clients.",
                3,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, s) in &rows {
                let v = [
                    &s.msg_received,
                    &s.msg_sent,
                    &s.bytes_received,
                    &s.bytes_sent,
                ][get]
                    .load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(k));
            }
        }
        out.push_str("# HELP synapsor_upstream_handled_total Calls answered, by upstream group and status.\n# TYPE synapsor_upstream_handled_total counter\n");
        let mut ups: Vec<_> = self
            .upstream_handled
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        ups.sort();
        for ((l, u, code), n) in ups {
            let _ = writeln!(
                out,
                "synapsor_upstream_handled_total{{listener=\"{}\",upstream=\"{}\",grpc_code=\"{}\"}} {n}",
                escape(&l),
                escape(&u),
                CODE_NAMES[code]
            );
        }
        out.push_str("# HELP synapsor_calls_in_flight Calls in progress.\n# TYPE synapsor_calls_in_flight gauge\n");
        let mut flights: Vec<_> = self
            .in_flight
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        flights.sort();
        for (l, n) in flights {
            let _ = writeln!(
                out,
                "synapsor_calls_in_flight{{listener=\"{}\"}} {n}",
                escape(&l)
            );
        }
        out.push_str("# HELP synapsor_interceptor_rejected_total Calls a stage refused.\n# TYPE synapsor_interceptor_rejected_total counter\n");
        let mut rej: Vec<_> = self
            .rejected
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rej.sort();
        for ((l, stage, plugin, reason), n) in rej {
            // `plugin` only for a `wasm` stage (an empty label is no label in Prometheus).
            let plugin = if plugin.is_empty() {
                String::new()
            } else {
                format!(",plugin=\"{}\"", escape(&plugin))
            };
            let _ = writeln!(out, "synapsor_interceptor_rejected_total{{listener=\"{}\",stage=\"{stage}\"{plugin},reason=\"{reason}\"}} {n}", escape(&l));
        }
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped (method names come
/// from clients).
/// Writes one Prometheus histogram series: cumulative `_bucket` lines for `bounds` (seconds) from
/// the per-bucket `counts`, then `+Inf`, `_sum` and `_count`.
pub(crate) fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[AtomicU64],
    count: u64,
    sum_secs: f64,
) {
    let mut cumulative = 0;
    for (le, n) in bounds.iter().zip(counts) {
        cumulative += n.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_secs}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

pub(crate) fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

struct Shared {
    registry: Arc<Registry>,
    /// Path → series, looked up without allocating; bounded like the labels.
    by_path: DashMap<String, Arc<Series>>,
    listener: Arc<str>,
    max_methods: usize,
    in_flight: Arc<AtomicI64>,
}

/// The layer of one `metrics` stage.
#[derive(Clone)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

impl MetricsLayer {
    /// A stage counting into `registry` for `listener`.
    pub fn new(cfg: &MetricsConfig, registry: Arc<Registry>, listener: &str) -> MetricsLayer {
        let listener: Arc<str> = listener.into();
        let in_flight = registry
            .in_flight
            .entry(listener.clone())
            .or_default()
            .clone();
        MetricsLayer {
            shared: Arc::new(Shared {
                registry,
                by_path: DashMap::new(),
                listener,
                max_methods: cfg.max_methods,
                in_flight,
            }),
        }
    }

    /// The series of a call's method (`other` past the cap; garbage paths too).
    fn series(&self, path: &str) -> Arc<Series> {
        let s = &self.shared;
        if let Some(found) = s.by_path.get(path) {
            return found.clone();
        }
        let series = self.series_slow(path);
        if s.by_path.len() < s.max_methods {
            s.by_path.insert(path.to_string(), series.clone());
        }
        series
    }

    /// The series of a path not seen before (or past the cache's bound).
    fn series_slow(&self, path: &str) -> Arc<Series> {
        let s = &self.shared;
        let (service, method) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((svc, m)) if !svc.is_empty() && !m.is_empty() && !m.contains('/') => (svc, m),
            _ => ("other", "other"),
        };
        let key = (s.listener.clone(), service.to_string(), method.to_string());
        if let Some(found) = s.registry.series.get(&key) {
            return found.clone();
        }
        let key = if s.registry.series.len() >= s.max_methods {
            (s.listener.clone(), "other".to_string(), "other".to_string())
        } else {
            key
        };
        s.registry.series.entry(key).or_default().clone()
    }
}

/// Records a call's end exactly once: at its status, or as CANCELLED if dropped first.
struct Recorder {
    series: Arc<Series>,
    shared: Arc<Shared>,
    upstream: Option<Arc<str>>,
    in_flight: Arc<AtomicI64>,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let code = code.min(16);
        if let Some(u) = self.upstream.take() {
            self.shared
                .registry
                .upstream_handled
                .entry((self.shared.listener.clone(), u, code))
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
        let s = &self.series;
        s.handled[code].fetch_add(1, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(Code::Cancelled as usize);
    }
}

/// Counts the messages and bytes of the client's request.
struct Received {
    series: Arc<Series>,
    framing: Framing,
}

impl Watch for Received {
    fn seen(&mut self, what: Seen<'_>) {
        if let Seen::Data(d) = what {
            let s = &self.series;
            s.msg_received
                .fetch_add(self.framing.feed(d), Ordering::Relaxed);
            s.bytes_received
                .fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Counts the response's messages and bytes and records the status when it goes by.
struct Sent {
    rec: Recorder,
    framing: Framing,
}

impl Watch for Sent {
    fn seen(&mut self, what: Seen<'_>) {
        match what {
            Seen::Data(d) => {
                let s = &self.rec.series;
                s.msg_sent
                    .fetch_add(self.framing.feed(d), Ordering::Relaxed);
                s.bytes_sent.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            Seen::Trailers(t) => self
                .rec
                .finish(status_code(t).unwrap_or(Code::Unknown as usize)),
            Seen::Error(e) => self.rec.finish(status_of(e).code as usize),
            Seen::End => self.rec.finish(Code::Unknown as usize),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The `metrics` service around `S`.
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S> Service<Request> for Metrics<S>
where
    S: Service<Request, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let series = self.layer.series(req.uri().path());
        series.started.fetch_add(1, Ordering::Relaxed);
        let shared = self.layer.shared.clone();
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut rec = Recorder {
            series: series.clone(),
            shared: shared.clone(),
            upstream: None,
            in_flight: shared.in_flight.clone(),
            started: Instant::now(),
            done: false,
        };
        let req = req.map(|body| {
            body.watched(Received {
                series,
                framing: Framing::default(),
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    rec.upstream = resp
                        .extensions()
                        .get::<UpstreamGroup>()
                        .map(|u| u.0.clone());
                    if let Some(code) = status_code(resp.headers()) {
                        rec.finish(code); // trailers-only
                        return Ok(resp);
                    }
                    Ok(resp.map(|body| {
                        body.watched(Sent {
                            rec,
                            framing: Framing::default(),
                        })
                    }))
                }
                Err(e) => {
                    if let Some(r) = e.downcast_ref::<Rejected>() {
                        let key = (
                            shared.listener.clone(),
                            r.stage,
                            r.plugin.clone().unwrap_or_else(|| "".into()),
                            CODE_NAMES[r.code as usize],
                        );
                        shared
                            .registry
                            .rejected
                            .entry(key)
                            .or_default()
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    rec.finish(status_of(&e).code as usize);
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("pkg.Svc"), "pkg.Svc");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
