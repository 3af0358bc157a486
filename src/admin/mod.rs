//! The admin HTTP listener (HTTP/1.1, loopback by default): `GET /healthz` (the process is up),
//! `GET /readyz` (every listener is bound and every upstream has a connected endpoint), and
//! `GET /config` (the effective configuration as YAML), `GET /metrics` (Prometheus text), and
//! `GET /upstreams` (every endpoint's state as JSON).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::interceptor::metrics::escape;
use crate::interceptor::Registry;
use crate::upstream::Upstream;

/// What the admin endpoints report on.
pub struct AdminState {
    /// The effective configuration, rendered once.
    pub config_yaml: String,
    /// Every upstream group, with each worker's instance of it.
    pub upstreams: Vec<(String, Vec<Arc<Upstream>>)>,
    /// Set once every listener is bound and serving.
    pub listening: AtomicBool,
    /// What the `metrics` stages counted.
    pub metrics: Arc<Registry>,
}

impl AdminState {
    /// Ready, or the reasons it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Relaxed) {
            return Err("listeners are not serving".into());
        }
        let down: Vec<&str> = self
            .upstreams
            .iter()
            .filter(|(_, instances)| !instances.iter().any(|u| u.connected()))
            .map(|(name, _)| name.as_str())
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
}

impl AdminState {
    /// Every endpoint's state, as JSON: `{ "upstreams": [ { "name", "endpoints": [ { "address",
    /// "weight", "in_rotation", "healthy", "connect_failures", "in_flight", "connections" } ] } ] }`.
    pub fn upstreams_json(&self) -> String {
        let groups: Vec<serde_json::Value> = self
            .upstreams
            .iter()
            .map(|(name, instances)| {
                let endpoints: Vec<serde_json::Value> = instances[0]
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, ep)| {
                        let connections: usize = instances
                            .iter()
                            .map(|u| u.endpoints[i].pool.open_connections())
                            .sum();
                        serde_json::json!({
                            "address": &*ep.address,
                            "weight": ep.weight,
                            "in_rotation": ep.available(),
                            "healthy": ep.healthy(),
                            "connect_failures": ep.failures(),
                            "in_flight": ep.in_flight.load(Ordering::Relaxed),
                            "connections": connections,
                        })
                    })
                    .collect();
                serde_json::json!({ "name": name, "endpoints": endpoints })
            })
            .collect();
        let mut out = serde_json::json!({ "upstreams": groups }).to_string();
        out.push('\n');
        out
    }

    /// Pool and endpoint state of every upstream, in Prometheus text.
    pub fn render_upstreams(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("# HELP synapsor_upstream_connections Open pooled connections, over all workers.\n# TYPE synapsor_upstream_connections gauge\n");
        let mut rows = Vec::new();
        for (name, instances) in &self.upstreams {
            for (i, ep) in instances[0].endpoints.iter().enumerate() {
                let conns: usize = instances
                    .iter()
                    .map(|u| u.endpoints[i].pool.open_connections())
                    .sum();
                rows.push((
                    escape(name).into_owned(),
                    escape(&ep.address).into_owned(),
                    conns,
                    ep.in_flight.load(Ordering::Relaxed),
                    ep.available(),
                ));
            }
        }
        for (u, e, conns, _, _) in &rows {
            let _ = writeln!(
                out,
                "synapsor_upstream_connections{{upstream=\"{u}\",endpoint=\"{e}\"}} {conns}"
            );
        }
        out.push_str("# HELP synapsor_upstream_streams Streams open on each endpoint.\n# TYPE synapsor_upstream_streams gauge\n");
        for (u, e, _, streams, _) in &rows {
            let _ = writeln!(
                out,
                "synapsor_upstream_streams{{upstream=\"{u}\",endpoint=\"{e}\"}} {streams}"
            );
        }
        out.push_str("# HELP synapsor_endpoint_up 1 while the endpoint is in rotation.\n# TYPE synapsor_endpoint_up gauge\n");
        for (u, e, _, _, up) in &rows {
            let _ = writeln!(
                out,
                "synapsor_endpoint_up{{upstream=\"{u}\",endpoint=\"{e}\"}} {}",
                u8::from(*up)
            );
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
                async move { Ok::<_, Infallible>(handle(&state, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
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
        "/config" => text(StatusCode::OK, state.config_yaml.clone()),
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
            state.render_upstreams(&mut out);
            text(StatusCode::OK, out)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /config, /metrics or /upstreams\n".into(),
        ),
    }
}
