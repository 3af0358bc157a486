//! The admin HTTP listener (HTTP/1.1, loopback by default): `GET /healthz` (the process is up),
//! `GET /readyz` (every listener is bound and every upstream has a connected endpoint),
//! `GET /config` (the effective configuration as YAML), `GET /metrics` (OpenMetrics text, which Prometheus reads),
//! `GET /upstreams` (every endpoint's state as JSON), and `POST /reload` (reload the config
//! file; the answer says what changed, or why the file was refused).

mod upstreams;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::telemetry::{Label, Registry};
use crate::upstream::metrics::EndpointMetrics;
use crate::upstream::UpstreamGroup;

/// A request to reload the configuration; the answer is a summary of what changed, or the
/// reason the new file was refused.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What changes with each reload.
pub struct AdminView {
    /// The effective configuration, rendered.
    pub config_yaml: String,
    /// Every upstream group.
    pub upstreams: Vec<Arc<UpstreamGroup>>,
}

/// What the admin endpoints report on.
pub struct AdminState {
    view: ArcSwap<AdminView>,
    /// Set once every listener is bound and serving.
    pub listening: AtomicBool,
    /// Every metric of the gateway.
    pub metrics: Arc<Registry>,
    /// The endpoints `metrics` reports on.
    endpoints: EndpointMetrics,
    /// Where `POST /reload` sends its request, once reloading is wired up.
    reload: OnceLock<mpsc::Sender<ReloadRequest>>,
    /// `synapsor_config_reloads_total{result}`: reloads applied and refused.
    reloads: Family<[(&'static str, Label); 1], Counter>,
}

impl AdminState {
    /// Admin state over `view`.
    pub fn new(view: AdminView, metrics: Arc<Registry>) -> AdminState {
        let endpoints = EndpointMetrics::of(&metrics);
        endpoints.set(view.upstreams.clone());
        let reloads = metrics.metric(
            "synapsor_config_reloads",
            "Configuration reloads, applied or refused.",
            Family::default,
        );
        for result in ["applied", "refused"] {
            let _ = reloads.get_or_create(&[("result", result.into())]);
        }
        AdminState {
            view: ArcSwap::from_pointee(view),
            listening: AtomicBool::new(false),
            metrics,
            endpoints,
            reload: OnceLock::new(),
            reloads,
        }
    }

    /// The current view.
    pub fn view(&self) -> Arc<AdminView> {
        self.view.load_full()
    }

    /// Replaces the view after a reload.
    pub fn set_view(&self, view: AdminView) {
        self.endpoints.set(view.upstreams.clone());
        self.view.store(Arc::new(view));
    }

    /// Wires `POST /reload` to `tx`.
    pub fn set_reloader(&self, tx: mpsc::Sender<ReloadRequest>) {
        let _ = self.reload.set(tx);
    }

    /// Counts a reload: applied (`true`) or refused.
    pub fn count_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&[("result", result.into())])
            .inc();
    }

    /// Ready, or the reasons it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Relaxed) {
            return Err("listeners are not serving".into());
        }
        let view = self.view();
        let down: Vec<&str> = view
            .upstreams
            .iter()
            .filter(|g| !g.instances().iter().any(|u| u.connected()))
            .map(|g| &**g.name())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no connected endpoint in upstream(s): {}",
                down.join(", ")
            ))
        }
    }

    /// Every endpoint's state as JSON (see [`upstreams::json`] for the shape).
    pub fn upstreams_json(&self) -> String {
        upstreams::json(&self.view().upstreams)
    }

    async fn reload(&self) -> Result<String, String> {
        let tx = self
            .reload
            .get()
            .ok_or("this gateway was not started from a config file")?;
        let (reply, answer) = oneshot::channel();
        tx.send(reply)
            .await
            .map_err(|_| "the gateway is stopping")?;
        match tokio::time::timeout(Duration::from_secs(120), answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the reload was abandoned".into()),
            Err(_) => Err("the reload took longer than 120s".into()),
        }
    }
}

/// Serves admin requests until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() == "/reload" {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST /reload\n".into());
        }
        return match state.reload().await {
            Ok(summary) => text(StatusCode::OK, format!("reloaded: {summary}\n")),
            Err(why) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not reloaded; the running config stays: {why}\n"),
            ),
        };
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match state.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/config" => text(StatusCode::OK, state.view().config_yaml.clone()),
        "/upstreams" => {
            let mut r = text(StatusCode::OK, state.upstreams_json());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/metrics" => {
            let mut out = String::new();
            state.metrics.render(&mut out);
            let mut r = text(StatusCode::OK, out);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /config, /metrics, /upstreams or POST /reload\n"
                .into(),
        ),
    }
}
