//! The innermost services: [`Forward`] (route a call to its upstream group and forward it),
//! [`Upstreamed`] (forward to one fixed group), and [`Stack`], what a listener serves — the
//! forwarder alone, or stages around it. Which stages wrap what is decided in one place, the
//! gateway assembly (`gateway/build.rs`); nothing here knows a stage.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::call;
use crate::error::ProxyError;
use crate::grpc;
use crate::route::Router;
use crate::stack::{BoxError, BoxService, Request, Response};
use crate::upstream::Upstream;

/// The innermost service: routes a call to its upstream group and forwards it. Cloning is
/// cheap (one `Arc`).
#[derive(Clone)]
pub struct Forward {
    router: Arc<Router>,
    /// Per configured route: its own stages around the call, when it has any.
    routed: Arc<Vec<Option<BoxService>>>,
}

impl Forward {
    /// A forwarder over a listener's routing table. `routed` is built by the gateway assembly
    /// from `router`: for each configured route, in route order, that route's own stages around
    /// [`Upstreamed`] (its group), or `None` when the route has no stages.
    pub fn new(router: Router, routed: Vec<Option<BoxService>>) -> Forward {
        Forward {
            router: Arc::new(router),
            routed: Arc::new(routed),
        }
    }
}

/// The call to one fixed upstream group: what a route's own stages wrap.
#[derive(Clone)]
pub struct Upstreamed(pub Arc<Upstream>);

impl Service<Request> for Upstreamed {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        grpc::strip_hop_by_hop(&mut parts.headers);
        let call = call::Call::new(self.0.clone(), parts);
        Box::pin(async move { call.run(body).await.map_err(Into::into) })
    }
}

impl Service<Request> for Forward {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (parts, body) = req.into_parts();
        let Some(index) = self.router.route_index(&parts) else {
            let err = ProxyError::NoRoute(parts.uri.path().to_string());
            return Box::pin(std::future::ready(Err(err.into())));
        };
        let req = Request::from_parts(parts, body);
        match self.routed.get(index) {
            Some(Some(stack)) => stack.clone().call(req),
            _ => Upstreamed(self.router.upstream(index).clone()).call(req),
        }
    }
}

/// A listener's whole service on one worker: the forwarder alone when there are no stages (no
/// boxing, no extra call), or the stages around it.
#[derive(Clone)]
pub enum Stack {
    /// No stages.
    Plain(Forward),
    /// Stages around the forwarder, boxed into one type.
    Layered(BoxService),
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
