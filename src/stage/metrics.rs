//! `metrics`: counts every call the way go-grpc-prometheus does — `grpc_server_started_total`,
//! `grpc_server_handled_total{grpc_code}`, `grpc_server_handling_seconds` — plus calls in flight
//! and `synapsor_interceptor_rejected_total{stage,plugin,reason}` for calls later stages refused
//! (`plugin` names the plugin of a `wasm` stage, absent for built-in stages). The status is read
//! where it really is: the trailers (or a trailers-only head); a call the client abandons counts
//! as CANCELLED ([`super::observe`] ends each call once). Label sets are bounded: past
//! `max_methods` distinct methods, new ones count as `other`. The families are registered in
//! the gateway's [`Registry`] once, whichever listener's stage comes first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dashmap::DashMap;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::observe::{End, ObserveLayer, Observer};
use crate::config::MetricsConfig;
use crate::grpc::Framing;
use crate::stack::{Rejected, Request, Response, Seen, UpstreamGroup, Watch};
use crate::telemetry::{Label, Registry};

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

/// `listener`, `grpc_service`, `grpc_method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    listener: Label,
    grpc_service: Label,
    grpc_method: Label,
}

/// The call labels and `grpc_code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    listener: Label,
    grpc_service: Label,
    grpc_method: Label,
    grpc_code: &'static str,
}

/// `listener`, `upstream`, `grpc_code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    listener: Label,
    upstream: Label,
    grpc_code: &'static str,
}

/// `listener`, `stage`, `plugin` (only for a `wasm` stage), `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RejectedLabels {
    listener: Label,
    stage: &'static str,
    plugin: Option<Label>,
    reason: &'static str,
}

impl EncodeLabelSet for RejectedLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("listener", self.listener.clone()).encode(encoder.encode_label())?;
        ("stage", self.stage).encode(encoder.encode_label())?;
        if let Some(p) = &self.plugin {
            ("plugin", p.clone()).encode(encoder.encode_label())?;
        }
        ("reason", self.reason).encode(encoder.encode_label())
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The families of the `metrics` stages (one set per registry, shared by every listener).
#[derive(Clone)]
struct Families {
    started: Family<CallLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Histograms<CallLabels>,
    msg_received: Family<CallLabels, Counter>,
    msg_sent: Family<CallLabels, Counter>,
    bytes_received: Family<CallLabels, Counter>,
    bytes_sent: Family<CallLabels, Counter>,
    upstream_handled: Family<UpstreamLabels, Counter>,
    in_flight: Family<[(&'static str, Label); 1], Gauge>,
    rejected: Family<RejectedLabels, Counter>,
    /// Method label sets made so far, over all listeners (bounded by `max_methods`).
    methods: Arc<AtomicUsize>,
}

impl Families {
    fn of(r: &Registry) -> Families {
        let calls = |name, help| r.metric(name, help, Family::<CallLabels, Counter>::default);
        Families {
            started: calls("grpc_server_started", "Calls started."),
            handled: r.metric(
                "grpc_server_handled",
                "Calls finished, by status.",
                Family::default,
            ),
            handling: r.metric(
                "grpc_server_handling_seconds",
                "Time from the call's start to its status.",
                || Family::new_with_constructor((|| Histogram::new(BUCKETS)) as fn() -> _),
            ),
            msg_received: calls(
                "grpc_server_msg_received",
                "Messages received from clients.",
            ),
            msg_sent: calls("grpc_server_msg_sent", "Messages sent to clients."),
            bytes_received: calls(
                "synapsor_bytes_received",
                "Message bytes received from clients.",
            ),
            bytes_sent: calls("synapsor_bytes_sent", "Message bytes sent to clients."),
            upstream_handled: r.metric(
                "synapsor_upstream_handled",
                "Calls answered, by upstream group and status.",
                Family::default,
            ),
            in_flight: r.metric(
                "synapsor_calls_in_flight",
                "Calls in progress.",
                Family::default,
            ),
            rejected: r.metric(
                "synapsor_interceptor_rejected",
                "Calls a stage refused.",
                Family::default,
            ),
            methods: r.shared("grpc_server_methods", Arc::default),
        }
    }
}

/// One method's counters, looked up once per path and cached.
struct Series {
    labels: CallLabels,
    started: Counter,
    msg_received: Counter,
    msg_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    handling: Histogram,
    /// By code, created when first seen (a code never seen is not shown).
    handled: [OnceLock<Counter>; 17],
}

struct Shared {
    families: Families,
    /// Path → series, looked up without allocating; bounded like the labels.
    by_path: DashMap<String, Arc<Series>>,
    listener: Label,
    max_methods: usize,
    in_flight: Gauge,
}

/// The `metrics` stage of one listener.
#[derive(Clone)]
pub struct MetricsStage {
    shared: Arc<Shared>,
}

/// The layer of a `metrics` stage.
pub type MetricsLayer = ObserveLayer<MetricsStage>;

impl MetricsStage {
    /// A stage counting into `registry` for `listener`.
    pub fn layer(cfg: &MetricsConfig, registry: &Registry, listener: &str) -> MetricsLayer {
        let families = Families::of(registry);
        let listener = Label::from(listener);
        let in_flight = families
            .in_flight
            .get_or_create(&[("listener", listener.clone())])
            .clone();
        ObserveLayer(MetricsStage {
            shared: Arc::new(Shared {
                families,
                by_path: DashMap::new(),
                listener,
                max_methods: cfg.max_methods,
                in_flight,
            }),
        })
    }

    /// The series of a call's method (`other` past the cap; garbage paths too).
    fn series(&self, path: &str) -> Arc<Series> {
        let s = &self.shared;
        if let Some(found) = s.by_path.get(path) {
            return found.clone();
        }
        let series = Arc::new(self.series_slow(path));
        if s.by_path.len() < s.max_methods {
            s.by_path.insert(path.to_string(), series.clone());
        }
        series
    }

    /// The series of a path not seen before (or past the cache's bound).
    fn series_slow(&self, path: &str) -> Series {
        let s = &self.shared;
        let (service, method) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((svc, m)) if !svc.is_empty() && !m.is_empty() && !m.contains('/') => (svc, m),
            _ => ("other", "other"),
        };
        let mut labels = CallLabels {
            listener: s.listener.clone(),
            grpc_service: service.into(),
            grpc_method: method.into(),
        };
        let f = &s.families;
        if f.started.get(&labels).is_none() {
            if f.methods.load(Ordering::Relaxed) >= s.max_methods {
                labels.grpc_service = "other".into();
                labels.grpc_method = "other".into();
            } else {
                f.methods.fetch_add(1, Ordering::Relaxed);
            }
        }
        Series {
            started: f.started.get_or_create_owned(&labels),
            msg_received: f.msg_received.get_or_create_owned(&labels),
            msg_sent: f.msg_sent.get_or_create_owned(&labels),
            bytes_received: f.bytes_received.get_or_create_owned(&labels),
            bytes_sent: f.bytes_sent.get_or_create_owned(&labels),
            handling: f.handling.get_or_create_owned(&labels),
            handled: Default::default(),
            labels,
        }
    }

    /// Counts a call refused by a stage inside this one.
    fn rejected(&self, r: &Rejected) {
        let labels = RejectedLabels {
            listener: self.shared.listener.clone(),
            stage: r.stage,
            plugin: r.plugin.as_ref().map(Label::from),
            reason: CODE_NAMES[r.code as usize],
        };
        self.shared.families.rejected.get_or_create(&labels).inc();
    }
}

/// One call being counted.
pub struct CallCount {
    series: Arc<Series>,
    upstream: Option<Arc<str>>,
    started: Instant,
    framing: Framing,
}

impl Observer for MetricsStage {
    type Call = CallCount;

    fn start(&self, req: &mut Request) -> Result<Option<CallCount>, Rejected> {
        let series = self.series(req.uri().path());
        series.started.inc();
        self.shared.in_flight.inc();
        let body = std::mem::take(req.body_mut());
        *req.body_mut() = body.watched(Received {
            series: series.clone(),
            framing: Framing::default(),
        });
        Ok(Some(CallCount {
            series,
            upstream: None,
            started: Instant::now(),
            framing: Framing::default(),
        }))
    }

    fn head(&self, call: &mut CallCount, resp: &Response) {
        call.upstream = resp
            .extensions()
            .get::<UpstreamGroup>()
            .map(|u| u.0.clone());
    }

    fn data(&self, call: &mut CallCount, data: &[u8]) {
        call.series.msg_sent.inc_by(call.framing.feed(data));
        call.series.bytes_sent.inc_by(data.len() as u64);
    }

    fn end(&self, call: CallCount, end: End<'_>) {
        if let End::Failed(e) = end {
            if let Some(r) = e.downcast_ref::<Rejected>() {
                self.rejected(r);
            }
        }
        // Codes past 16 count under the last label, as before this stage moved onto the
        // observer layer.
        let code = end.code().min(16);
        let s = &self.shared;
        if let Some(u) = &call.upstream {
            let labels = UpstreamLabels {
                listener: s.listener.clone(),
                upstream: u.into(),
                grpc_code: CODE_NAMES[code],
            };
            s.families.upstream_handled.get_or_create(&labels).inc();
        }
        let series = &call.series;
        series.handled[code]
            .get_or_init(|| {
                let l = &series.labels;
                s.families.handled.get_or_create_owned(&HandledLabels {
                    listener: l.listener.clone(),
                    grpc_service: l.grpc_service.clone(),
                    grpc_method: l.grpc_method.clone(),
                    grpc_code: CODE_NAMES[code],
                })
            })
            .inc();
        series
            .handling
            .observe(call.started.elapsed().as_secs_f64());
        s.in_flight.dec();
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
            s.msg_received.inc_by(self.framing.feed(d));
            s.bytes_received.inc_by(d.len() as u64);
        }
    }
}
