//! Callouts: unary gRPC calls a plugin makes to the upstream groups its YAML allows
//! (`callouts.groups`), through the gateway's own balancer, pools, TLS and health state — what
//! Envoy's `ext_authz` filter and proxy-wasm's `dispatch_grpc_call` do. Bounded per plugin
//! (`max_in_flight` waiting at once, all instances together) and per hook call
//! (`max_per_hook`); each waits at most `callouts.timeout` (or less, as the plugin asks).
//!
//! The call is driven on the runtime of the worker whose pools it uses (the worker the client's
//! call came on), as a task of its own: the hook that asked waits on its fiber, the worker goes
//! on serving; the task is aborted when the wait ends early (timeout, the client went away).

mod answer;
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::bindings::{CalloutError, CalloutRequest, CalloutResponse, HeaderOp};
use super::codec;
use super::convert::{self, Target};
use super::task::AbortOnDrop;
use crate::config::CalloutConfig;
use crate::error::ProxyError;
use crate::grpc;
use crate::stack::{Body, BoxError, Callee};
pub use stats::{Outcome, TargetStats, BUCKETS, RESULTS};

/// Upstream groups by name, as the gateway assembly offers them to plugins.
pub type Callees = BTreeMap<String, Arc<dyn Callee>>;

/// A plugin's callouts: the groups it may call and the bounds on its calls.
pub struct Callouts {
    targets: BTreeMap<String, (Arc<dyn Callee>, Arc<TargetStats>)>,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    /// Callouts one hook call may make.
    pub max_per_hook: u32,
    max_message: usize,
    /// Counts of calls refused before they were sent (not allowed, over a bound, malformed).
    pub refused: Arc<TargetStats>,
}

impl Callouts {
    /// The callouts `cfg` allows, to the groups among `callees` it names (the config was
    /// validated: every name is there, but a plugin loaded alone by `synapsor check` has none);
    /// messages both ways of at most `max_message` bytes.
    pub fn new(cfg: &CalloutConfig, callees: &Callees, max_message: usize) -> Callouts {
        let targets = cfg
            .groups
            .iter()
            .filter_map(|g| {
                let callee = callees.get(g)?.clone();
                Some((g.clone(), (callee, Arc::new(TargetStats::default()))))
            })
            .collect();
        Callouts {
            targets,
            timeout: cfg.timeout.0,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight as usize)),
            max_per_hook: cfg.max_per_hook,
            max_message,
            refused: Arc::new(TargetStats::default()),
        }
    }

    /// Each allowed group's name and counts, for `/metrics`.
    pub fn stats(&self) -> Vec<(Arc<str>, Arc<TargetStats>)> {
        let mut all: Vec<_> = self
            .targets
            .iter()
            .map(|(g, (_, s))| (Arc::from(g.as_str()), s.clone()))
            .collect();
        all.push((Arc::from(""), self.refused.clone()));
        all
    }

    /// Makes the call `req` through worker `worker`'s pools and waits for its whole answer, at
    /// most `callouts.timeout`, what the plugin asked, and `left` (what remains of the client's
    /// deadline: the callout cannot outlive the call it is for).
    pub async fn call(
        &self,
        worker: usize,
        req: CalloutRequest,
        left: Option<Duration>,
    ) -> Result<CalloutResponse, CalloutError> {
        let Some((callee, stats)) = self.targets.get(&req.group) else {
            self.refused.count(Outcome::NotAllowed, None);
            return Err(CalloutError::NotAllowed(format!(
                "upstream group {:?} is not in this plugin's callouts.groups",
                req.group
            )));
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            stats.count(Outcome::Limited, None);
            return Err(CalloutError::Limited(
                "callouts.max_in_flight callouts of this plugin are waiting already".into(),
            ));
        };
        let timeout = req
            .timeout_ms
            .map_or(self.timeout, |ms| Duration::from_millis(ms.into()))
            .min(self.timeout)
            .min(left.unwrap_or(Duration::MAX));
        if timeout.is_zero() {
            stats.count(Outcome::Timeout, None);
            return Err(CalloutError::Timeout);
        }
        let request = match self.request(req, timeout) {
            Ok(r) => r,
            Err(e) => {
                stats.count(Outcome::Invalid, None);
                return Err(e);
            }
        };
        let started = Instant::now();
        let limit = self.max_message;
        let call = callee.call(worker, request);
        let work = async move {
            let resp = call
                .await
                .map_err(|e| match e.downcast_ref::<ProxyError>() {
                    Some(ProxyError::Deadline(_)) => CalloutError::Timeout,
                    _ => CalloutError::Unavailable(e.to_string()),
                })?;
            answer::read(resp, limit).await
        };
        let task = match callee.runtime(worker) {
            Some(rt) => AbortOnDrop(rt.spawn(work)),
            None => AbortOnDrop(tokio::spawn(work)),
        };
        let result = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(CalloutError::Unavailable(format!("callout task: {e}"))),
            Err(_) => Err(CalloutError::Timeout),
        };
        drop(permit);
        stats.count(Outcome::of(&result), Some(started.elapsed()));
        result
    }

    /// The HTTP/2 request of a callout: its method, metadata and one message, checked.
    fn request(
        &self,
        req: CalloutRequest,
        timeout: Duration,
    ) -> Result<crate::stack::Request, CalloutError> {
        let bad = |m: String| CalloutError::Invalid(m);
        let path_ok = req.method.starts_with('/')
            && req.method[1..].split('/').count() == 2
            && !req.method[1..].split('/').any(str::is_empty);
        if !path_ok || req.method.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(bad(format!(
                "method {:?} is not a gRPC method path (/package.Service/Method)",
                req.method
            )));
        }
        if req.message.len() > self.max_message {
            return Err(bad(format!(
                "the request message is {} bytes, over max_message_size ({})",
                req.message.len(),
                self.max_message
            )));
        }
        let ops: Vec<HeaderOp> = req.metadata.into_iter().map(HeaderOp::Append).collect();
        let ops = convert::check_ops(&ops, Target::Request).map_err(bad)?;
        let mut builder = Request::builder().method(Method::POST).uri(req.method);
        let headers = builder.headers_mut().expect("a fresh builder");
        convert::apply(ops, headers);
        if headers.contains_key(grpc::GRPC_TIMEOUT) {
            return Err(bad(
                "grpc-timeout is set by the gateway (use timeout-ms)".into()
            ));
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(grpc::GRPC_TIMEOUT, grpc::encode_timeout(timeout));
        headers.insert(
            HeaderName::from_static("user-agent"),
            HeaderValue::from_static("synapsor-callout"),
        );
        let frame: Bytes = codec::frame(false, &req.message);
        let body = Body::boxed(
            http_body_util::Full::new(frame).map_err(|e: Infallible| -> BoxError { match e {} }),
        );
        builder.body(body).map_err(|e| bad(e.to_string()))
    }
}
