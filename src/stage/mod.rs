//! Built-in stages (`rate_limit`, `concurrency_limit`, `api_key`, `jwt`, `access`, `metrics`,
//! `access_log`) and WebAssembly plugins (`wasm`, hosted by [`crate::plugin`]). Each is a tower
//! `Layer` over the one service type of [`crate::stack`]; a listener's `interceptors:` list (the
//! YAML keeps that name) becomes [`Stages`], wrapped around the forwarder by the gateway assembly
//! with the first stage outermost, so the YAML order is the execution order. A stage that
//! rejects returns a [`Rejected`](crate::stack::Rejected) error, which
//! [`crate::stack::status_of`] turns into a trailers-only gRPC status; the upstream is never
//! touched. Stages that only admit or refuse implement [`Check`]; stages that watch whole calls
//! implement `observe::Observer` (docs/ARCHITECTURE.md, "Where to add a stage").

mod access;
mod access_log;
mod api_key;
mod check;
mod concurrency_limit;
mod jwt;
mod key;
mod metrics;
mod observe;
mod rate_limit;
pub mod shared_limit;

use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

pub use access::AccessLayer;
pub use access_log::{AccessLogLayer, AccessLogStage};
pub use api_key::ApiKeyLayer;
pub use check::{Check, CheckLayer};
pub use concurrency_limit::{ConcurrencyLimitLayer, ConcurrencyLimitStage};
pub use jwt::JwtLayer;
pub use key::{KeyError, Keyer};
pub use metrics::{MetricsLayer, MetricsStage};
pub use rate_limit::RateLimitLayer;

use crate::config::StageConfig;
use crate::stack::{BoxError, BoxService, Request, Response};
use crate::telemetry::Registry;
use observe::ObserveLayer;

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
    /// Builds the stages of an `interceptors:` list (validated; plugins call out to `callees`);
    /// fails when a stage's outside input (a keys file, an environment variable) cannot be
    /// read, naming the stage.
    pub fn new(
        configs: &[StageConfig],
        listener: &str,
        registry: &Arc<Registry>,
        callees: &crate::plugin::callout::Callees,
    ) -> Result<Stages, String> {
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(match c {
                    StageConfig::RateLimit(c) => match &c.backend {
                        Some(b) => {
                            let l = shared_limit::SharedLimitLayer::new(c, b, listener, i);
                            shared_limit::StoreMetrics::add(
                                registry,
                                format!("{listener}:{i}"),
                                l.store(),
                            );
                            StageLayer::SharedLimit(l)
                        }
                        None => StageLayer::RateLimit(RateLimitLayer::new(c)),
                    },
                    StageConfig::ConcurrencyLimit(c) => {
                        StageLayer::ConcurrencyLimit(ObserveLayer(ConcurrencyLimitStage::new(c)))
                    }
                    StageConfig::Access(c) => StageLayer::Access(AccessLayer::new(c)),
                    StageConfig::Jwt(c) => StageLayer::Jwt(
                        JwtLayer::new(c).map_err(|e| format!("interceptors[{i}].jwt: {e}"))?,
                    ),
                    StageConfig::AccessLog(c) => StageLayer::AccessLog(
                        AccessLogStage::layer(c)
                            .map_err(|e| format!("interceptors[{i}].access_log: {e}"))?,
                    ),
                    StageConfig::Metrics(c) => {
                        StageLayer::Metrics(MetricsStage::layer(c, registry, listener))
                    }
                    StageConfig::Wasm(c) => StageLayer::Wasm(
                        crate::plugin::WasmLayer::new(c, registry, callees)
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

    /// True when there are no stages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These stages (first = outermost) around any service, boxed.
    pub fn wrap<S>(&self, inner: S) -> BoxService
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
