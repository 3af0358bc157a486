//! Built-in stages (`rate_limit`, `concurrency_limit`, `api_key`, `jwt`, `access`, `metrics`,
//! `access_log`) and WebAssembly plugins (`wasm`, hosted by [`crate::plugin`]). Each is a tower `Layer` over the one service type of [`crate::stack`]; a
//! listener's `interceptors:` list becomes a [`Stack`] with the first stage outermost, so the YAML
//! order is the execution order. A stage that rejects returns a [`Rejected`] error, which
//! [`crate::stack::status_of`] turns into a trailers-only gRPC status; the upstream is never
//! touched.

mod access;
mod access_log;
mod api_key;
mod check;
mod concurrency_limit;
mod jwt;
mod key;
pub(crate) mod metrics;
mod rate_limit;
pub mod shared_limit;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

pub use access::AccessLayer;
pub use access_log::{AccessLog, AccessLogLayer, UpstreamEndpoint, UpstreamGroup};
pub use api_key::ApiKeyLayer;
pub use check::{Check, CheckLayer, Checked};
pub use concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use jwt::JwtLayer;
pub use key::{KeyError, Keyer};
pub use metrics::{Metrics, MetricsLayer, Registry};
pub use rate_limit::RateLimitLayer;

use crate::config::StageConfig;
use crate::grpc::Code;
use crate::proxy::Forward;
use crate::stack::{BoxError, Request, Response};

/// The authenticated caller, put in the request's extensions by an auth stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// Where an auth stage also writes the principal, for an outer stage (the access log) that saw
/// the request before authentication.
#[derive(Clone, Debug, Default)]
pub struct PrincipalSlot(pub Arc<std::sync::OnceLock<String>>);

/// The client's address, put in every request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// A call a stage refused: the status it gets and any extra trailers.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    /// The gRPC status code.
    pub code: Code,
    /// The `grpc-message`.
    pub message: String,
    /// When set, the `grpc-retry-pushback-ms` trailer: how long the client should wait.
    pub retry_pushback_ms: Option<u64>,
    /// The kind of stage that refused the call (set by the stage's service).
    pub stage: &'static str,
    /// The plugin that refused it, for a `wasm` stage.
    pub plugin: Option<Arc<str>>,
    /// More trailers to send with the status (a plugin's rejection may carry some).
    pub extra: Option<Box<HeaderMap>>,
}

impl Rejected {
    /// A rejection with `code` and `message` and no extra trailers.
    pub fn new(code: Code, message: impl Into<String>) -> Rejected {
        Rejected {
            code,
            message: message.into(),
            retry_pushback_ms: None,
            stage: "",
            plugin: None,
            extra: None,
        }
    }

    /// RESOURCE_EXHAUSTED asking the client to wait `pushback_ms` before retrying.
    pub fn exhausted(message: String, pushback_ms: Option<u64>) -> Rejected {
        Rejected {
            retry_pushback_ms: pushback_ms,
            ..Rejected::new(Code::ResourceExhausted, message)
        }
    }

    /// The same rejection, attributed to `stage`.
    pub fn by(self, stage: &'static str) -> Rejected {
        Rejected { stage, ..self }
    }

    /// The same rejection, attributed to the plugin `name` of a `wasm` stage.
    pub fn by_plugin(self, name: &Arc<str>) -> Rejected {
        Rejected {
            stage: "wasm",
            plugin: Some(name.clone()),
            ..self
        }
    }

    /// Who refused the call, as logs name it: `rate_limit`, or `wasm:NAME` for a plugin.
    pub fn origin(&self) -> String {
        match &self.plugin {
            Some(p) => format!("{}:{p}", self.stage),
            None => self.stage.to_string(),
        }
    }

    /// The extra trailers of this rejection.
    pub fn trailers(&self) -> HeaderMap {
        let mut t = self.extra.as_deref().cloned().unwrap_or_default();
        if let Some(ms) = self.retry_pushback_ms {
            t.insert(
                HeaderName::from_static("grpc-retry-pushback-ms"),
                HeaderValue::from(ms),
            );
        }
        t
    }
}

/// A listener's whole service on one worker: the forwarder alone when there are no stages (no
/// boxing, no extra call), or the stages around it.
#[derive(Clone)]
pub enum Stack {
    /// No stages.
    Plain(Forward),
    /// Stages around the forwarder, boxed into one type.
    Layered(BoxCloneSyncService<Request, Response, BoxError>),
}

/// The stages of one listener, built once and shared by every worker (their state — buckets,
/// counts — is the listener's, not a worker's).
#[derive(Clone, Default)]
pub struct Stages(Vec<StageLayer>);

#[derive(Clone)]
enum StageLayer {
    RateLimit(RateLimitLayer),
    SharedLimit(shared_limit::SharedLimitLayer),
    ConcurrencyLimit(ConcurrencyLimitLayer),
    ApiKey(ApiKeyLayer),
    Access(AccessLayer),
    Metrics(MetricsLayer),
    AccessLog(AccessLogLayer),
    Jwt(JwtLayer),
    Wasm(crate::plugin::WasmLayer),
}

impl Stages {
    /// Builds the stages of an `interceptors:` list (validated); fails when a stage's outside
    /// input (a keys file, an environment variable) cannot be read, naming the stage.
    pub fn new(
        configs: &[StageConfig],
        listener: &str,
        registry: &Arc<Registry>,
    ) -> Result<Stages, String> {
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(match c {
                    StageConfig::RateLimit(c) => match &c.backend {
                        Some(b) => {
                            let l = shared_limit::SharedLimitLayer::new(c, b, listener, i);
                            registry.add_limit_store(format!("{listener}:{i}"), l.store());
                            StageLayer::SharedLimit(l)
                        }
                        None => StageLayer::RateLimit(RateLimitLayer::new(c)),
                    },
                    StageConfig::ConcurrencyLimit(c) => {
                        StageLayer::ConcurrencyLimit(ConcurrencyLimitLayer::new(c))
                    }
                    StageConfig::Access(c) => StageLayer::Access(AccessLayer::new(c)),
                    StageConfig::Jwt(c) => StageLayer::Jwt(
                        JwtLayer::new(c).map_err(|e| format!("interceptors[{i}].jwt: {e}"))?,
                    ),
                    StageConfig::AccessLog(c) => StageLayer::AccessLog(
                        AccessLogLayer::new(c)
                            .map_err(|e| format!("interceptors[{i}].access_log: {e}"))?,
                    ),
                    StageConfig::Metrics(c) => {
                        StageLayer::Metrics(MetricsLayer::new(c, registry.clone(), listener))
                    }
                    StageConfig::Wasm(c) => StageLayer::Wasm(
                        crate::plugin::WasmLayer::new(c, registry)
                            .map_err(|e| format!("interceptors[{i}].wasm: {e}"))?,
                    ),
                    StageConfig::ApiKey(c) => StageLayer::ApiKey(
                        ApiKeyLayer::new(c)
                            .map_err(|e| format!("interceptors[{i}].api_key: {e}"))?,
                    ),
                })
            })
            .collect::<Result<_, String>>()
            .map(Stages)
    }

    /// The service of a worker: these stages (first = outermost) around `forward`.
    pub fn around(&self, forward: Forward) -> Stack {
        if self.0.is_empty() {
            return Stack::Plain(forward);
        }
        Stack::Layered(self.wrap(forward))
    }

    /// True when there are no stages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These stages (first = outermost) around any service, boxed.
    pub fn wrap<S>(&self, inner: S) -> BoxCloneSyncService<Request, Response, BoxError>
    where
        S: Service<Request, Response = Response, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let mut svc = BoxCloneSyncService::new(inner);
        for stage in self.0.iter().rev() {
            svc = match stage {
                StageLayer::RateLimit(l) => {
                    BoxCloneSyncService::new(CheckLayer(l.clone()).layer(svc))
                }
                StageLayer::SharedLimit(l) => BoxCloneSyncService::new(l.layer(svc)),
                StageLayer::ConcurrencyLimit(l) => BoxCloneSyncService::new(l.layer(svc)),
                StageLayer::ApiKey(l) => BoxCloneSyncService::new(CheckLayer(l.clone()).layer(svc)),
                StageLayer::Access(l) => BoxCloneSyncService::new(CheckLayer(l.clone()).layer(svc)),
                StageLayer::Metrics(l) => BoxCloneSyncService::new(l.layer(svc)),
                StageLayer::AccessLog(l) => BoxCloneSyncService::new(l.layer(svc)),
                StageLayer::Jwt(l) => BoxCloneSyncService::new(CheckLayer(l.clone()).layer(svc)),
                StageLayer::Wasm(l) => BoxCloneSyncService::new(l.layer(svc)),
            };
        }
        svc
    }
}

impl Service<Request> for Stack {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Stack::Plain(f) => f.poll_ready(cx),
            Stack::Layered(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self {
            Stack::Plain(f) => f.call(req),
            Stack::Layered(s) => s.call(req),
        }
    }
}
