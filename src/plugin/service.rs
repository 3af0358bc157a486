//! [`WasmLayer`]: a plugin as a tower layer. `on-request` runs before the inner service (it can
//! rewrite metadata or refuse the call); `on-response` runs once the call's status is known — on
//! a trailers-only answer at once, on a streamed one when its trailers pass, on a gateway error
//! before it is answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

use super::bindings::{Header, Hooks, RequestAction, ResponseAction};
use super::codec::Encoding;
use super::compat::Direction;
use super::convert::{self, Target};
use super::host::CallCtx;
use super::instance::Version;
use super::message::{MessageBody, MessageHook, Verdict};
use super::{Failure, Plugin};
use crate::config::{OnError, WasmConfig};
use crate::grpc::{self, Code};
use crate::stack::{status_of, Body, BoxError, Request, Response};
use crate::stack::{Inbound, Rejected, UpstreamEndpoint, UpstreamGroup};
use crate::telemetry::Registry;

/// The layer of one `wasm` stage.
#[derive(Clone)]
pub struct WasmLayer {
    plugin: Arc<Plugin>,
}

impl WasmLayer {
    /// Loads the plugin (compiling it and `init`ing one instance; its callouts go to the
    /// groups of `callees` it may call) and registers its metrics.
    pub fn new(
        cfg: &WasmConfig,
        registry: &Registry,
        callees: &super::callout::Callees,
    ) -> Result<WasmLayer, String> {
        let plugin = Plugin::load_in(cfg, registry, callees)?;
        super::PluginMetrics::add(registry, plugin.shared.name.clone(), plugin.stats.clone());
        super::io_metrics::PluginIoMetrics::add(registry, plugin.shared.clone());
        Ok(WasmLayer { plugin })
    }

    /// The loaded plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}

impl<S> Layer<S> for WasmLayer {
    type Service = WasmService<S>;

    fn layer(&self, inner: S) -> WasmService<S> {
        WasmService {
            inner,
            plugin: self.plugin.clone(),
        }
    }
}

/// The service of a `wasm` stage around `S`.
#[derive(Clone)]
pub struct WasmService<S> {
    inner: S,
    plugin: Arc<Plugin>,
}

impl<S> Service<Request> for WasmService<S>
where
    S: Service<Request, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(serve(self.plugin.clone(), inner, req))
    }
}

/// One call through the plugin: `on-request`, then the message hooks it asked for around the
/// inner service, then `on-response`.
async fn serve<S>(plugin: Arc<Plugin>, mut inner: S, mut req: Request) -> Result<Response, BoxError>
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    let version = plugin.current.load_full();
    let call_id = convert::next_call_id();
    let info = convert::request_info(&req, call_id);
    let inbound = req.extensions().get::<Arc<Inbound>>().cloned();
    let ctx = Arc::new(CallCtx::new(inbound).with_deadline(info.deadline_ms));
    let started = Instant::now();
    let method = info.method.clone();
    let answer = version.on_request(ctx.clone(), info).await;
    plugin.stats.observe(started.elapsed());
    plugin.stats.calls[0].fetch_add(1, Ordering::Relaxed);
    let outcome = match answer {
        Ok(RequestAction::Continue(ops)) => convert::check_ops(&ops, Target::Request)
            .map(|ops| convert::apply(ops, req.headers_mut()))
            .map_err(Failure::Invalid),
        Ok(RequestAction::Reject(r)) => match convert::rejection(&r) {
            Ok(rejected) => {
                plugin.stats.rejections.fetch_add(1, Ordering::Relaxed);
                return Err(rejected.by_plugin(&plugin.shared.name).into());
            }
            Err(e) => Err(Failure::Invalid(e)),
        },
        Err(f) => Err(f),
    };
    if let Err(f) = outcome {
        if let Some(denied) = plugin.failed(&f) {
            return Err(denied.into());
        }
    }
    let hook = Hook {
        plugin,
        version,
        ctx,
        call_id,
        method,
    };
    let hooks = hook.version.hooks();
    if hooks == Hooks::empty() {
        if !hook.plugin.cfg.on_response {
            return inner.call(req).await;
        }
        return match inner.call(req).await {
            Ok(resp) => Ok(hook.on_answer(resp).await),
            Err(e) => hook.on_error(e).await,
        };
    }
    let verdict = Arc::new(Verdict::default());
    if hooks.contains(Hooks::REQUEST_MESSAGES) {
        let messages = hook.messages(Direction::Request, req.headers());
        req = req.map(|b| Body::boxed(MessageBody::new(b, Some(messages), verdict.clone())));
    }
    match decided_or(inner.call(req), &verdict).await {
        Ok(resp) => {
            let resp = hook.watch(resp, hooks, verdict);
            if !hook.plugin.cfg.on_response {
                return Ok(resp);
            }
            Ok(hook.on_answer(resp).await)
        }
        Err(e) if !hook.plugin.cfg.on_response => Err(e),
        Err(e) => hook.on_error(e).await,
    }
}

/// The inner call's result, or the plugin's refusal of a request message once it is decided
/// (which also wins over the failure the refusal caused upstream).
async fn decided_or<F>(call: F, verdict: &Verdict) -> Result<Response, BoxError>
where
    F: Future<Output = Result<Response, BoxError>>,
{
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = call.as_mut().poll(cx) {
            // Taken only when the call failed: with a response, the refusal is left for the
            // response body, which ends the call with it (and drops the upstream stream).
            if r.is_err() {
                if let Some(refused) = verdict.take() {
                    return Poll::Ready(Err(refused.into()));
                }
            }
            return Poll::Ready(r);
        }
        verdict.poll_take(cx).map(|refused| Err(refused.into()))
    })
    .await
}

impl Plugin {
    /// Counts and logs a failure; the rejection the call gets under `on_error: deny`.
    pub(super) fn failed(&self, f: &Failure) -> Option<Rejected> {
        self.stats.errors[f.index()].fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_warn.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(plugin = %self.cfg.name, "plugin {f}");
        } else {
            tracing::debug!(plugin = %self.cfg.name, "plugin {f}");
        }
        match self.cfg.on_error {
            OnError::Allow => None,
            OnError::Deny => Some(
                Rejected::new(
                    Code::Unavailable,
                    format!("plugin {} failed: {}", self.cfg.name, f.kind()),
                )
                .by_plugin(&self.shared.name),
            ),
        }
    }
}

/// What the hooks after `on-request` need of a call.
struct Hook {
    plugin: Arc<Plugin>,
    version: Arc<Version>,
    ctx: Arc<CallCtx>,
    call_id: u64,
    method: String,
}

impl Hook {
    /// The message hook of `dir` for this call, whose messages `headers` describe.
    fn messages(&self, dir: Direction, headers: &HeaderMap) -> Arc<MessageHook> {
        Arc::new(MessageHook {
            plugin: self.plugin.clone(),
            version: self.version.clone(),
            ctx: self.ctx.clone(),
            call_id: self.call_id,
            method: self.method.clone(),
            dir,
            encoding: Encoding::of(headers),
        })
    }

    /// A response of a call with message hooks: its messages go through `on-response-message`
    /// if the plugin asked, and it ends with the plugin's status if a request message is
    /// refused. The hooks from now on see the upstream that serves the call.
    fn watch(&self, resp: Response, hooks: Hooks, verdict: Arc<Verdict>) -> Response {
        self.served_by(&resp);
        if grpc::status_code(resp.headers()).is_some() {
            return resp; // trailers-only: no body, no messages
        }
        let messages = hooks
            .contains(Hooks::RESPONSE_MESSAGES)
            .then(|| self.messages(Direction::Response, resp.headers()));
        resp.map(|b| Body::boxed(MessageBody::new(b, messages, verdict)))
    }

    /// Runs `on-response` for a call that ended with the status in `block`, and changes `block`
    /// as the plugin (or its failure) says. True when `block` changed.
    async fn finish(&self, headers: Vec<Header>, block: &mut HeaderMap) -> bool {
        let info = convert::response_info(self.call_id, &self.method, headers, block);
        let started = Instant::now();
        let answer = self.version.on_response(self.ctx.clone(), info).await;
        let stats = &self.plugin.stats;
        stats.observe(started.elapsed());
        stats.calls[1].fetch_add(1, Ordering::Relaxed);
        let outcome = match answer {
            Ok(ResponseAction::Continue(ops)) if ops.is_empty() => return false,
            Ok(ResponseAction::Continue(ops)) => convert::check_ops(&ops, Target::Status)
                .map(|ops| convert::apply(ops, block))
                .map_err(Failure::Invalid),
            Ok(ResponseAction::OverrideStatus(o)) => {
                match convert::status_override(o.code, &o.message) {
                    Ok(code) => {
                        stats.overrides.fetch_add(1, Ordering::Relaxed);
                        block.remove(grpc::GRPC_MESSAGE);
                        grpc::put_status(block, code, &o.message);
                        Ok(())
                    }
                    Err(e) => Err(Failure::Invalid(e)),
                }
            }
            Err(f) => Err(f),
        };
        match outcome {
            Ok(()) => true,
            Err(f) => match self.plugin.failed(&f) {
                Some(denied) => {
                    block.remove(grpc::GRPC_MESSAGE);
                    grpc::put_status(block, denied.code, &denied.message);
                    true
                }
                None => false,
            },
        }
    }

    /// Notes the upstream group and endpoint that answered with `resp`, for `properties`.
    fn served_by(&self, resp: &Response) {
        let ext = resp.extensions();
        if let Some(group) = ext.get::<UpstreamGroup>() {
            let endpoint = ext.get::<UpstreamEndpoint>().map(|e| e.0.clone());
            let _ = self.ctx.served.set((group.0.clone(), endpoint));
        }
    }

    /// A response from the inner service: a trailers-only answer is finished now, a streamed
    /// one when its trailers pass.
    async fn on_answer(self, mut resp: Response) -> Response {
        self.served_by(&resp);
        if grpc::status_code(resp.headers()).is_some() {
            let mut headers = std::mem::take(resp.headers_mut());
            self.finish(Vec::new(), &mut headers).await;
            *resp.headers_mut() = headers;
            return resp;
        }
        let headers = convert::header_list(resp.headers());
        resp.map(|body| {
            Body::boxed(HookBody {
                body,
                hook: Some((self, headers)),
                pending: None,
            })
        })
    }

    /// An error from the inner service: the plugin sees the status it maps to; if it changes
    /// anything the call is answered trailers-only with the changed block.
    async fn on_error(self, e: BoxError) -> Result<Response, BoxError> {
        let status = status_of(&e);
        let mut block = status.to_trailers();
        if !self.finish(Vec::new(), &mut block).await {
            return Err(e);
        }
        let mut resp = status.to_response().map(|()| Body::empty());
        resp.headers_mut().remove(grpc::GRPC_MESSAGE);
        resp.headers_mut().extend(block);
        Ok(resp)
    }
}

type Pending = Pin<Box<dyn Future<Output = HeaderMap> + Send>>;

/// A streamed response body whose trailers go through `on-response`.
struct HookBody {
    body: Body,
    hook: Option<(Hook, Vec<Header>)>,
    pending: Option<Pending>,
}

impl http_body::Body for HookBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(p) = this.pending.as_mut() {
            let trailers = ready!(p.as_mut().poll(cx));
            this.pending = None;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) if frame.is_trailers() => {
                let Some((hook, headers)) = this.hook.take() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let mut trailers = frame.into_trailers().unwrap_or_default();
                let mut p: Pending = Box::pin(async move {
                    hook.finish(headers, &mut trailers).await;
                    trailers
                });
                match p.as_mut().poll(cx) {
                    Poll::Ready(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    Poll::Pending => {
                        this.pending = Some(p);
                        Poll::Pending
                    }
                }
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
