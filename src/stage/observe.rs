//! The one layer for stages that watch a whole call — `metrics`, `access_log`,
//! `concurrency_limit`. A call ends in exactly one of five ways, and [`Observer::end`] hears of
//! it exactly once:
//!
//! - a status in the response head (a trailers-only answer: [`End::Status`]);
//! - a status in the trailers after a streamed body ([`End::Status`]);
//! - an error instead of a response — a later stage's refusal, no route, a deadline
//!   ([`End::Failed`]);
//! - an error in the middle of the response body ([`End::BodyError`]), or a body that ends
//!   without trailers ([`End::NoStatus`]);
//! - dropped before any of these: the client went away ([`End::Dropped`], counted as
//!   CANCELLED).
//!
//! The layer writes the tower `Layer` + `Service` + boxed future once; an observer says what
//! it keeps per call and what it does at the start, the response head, each response DATA
//! frame and the end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::grpc::{status_code, Code};
use crate::stack::{status_of, BoxError, Rejected, Request, Response, Seen, Watch};

/// How a call ended.
#[derive(Debug)]
pub enum End<'a> {
    /// `grpc-status` in a trailers-only head or in the trailers.
    Status(usize),
    /// The inner service failed instead of answering; the client gets `status_of(err)`.
    Failed(&'a BoxError),
    /// The response body failed after the head was sent.
    BodyError(&'a BoxError),
    /// The response body ended without trailers (UNKNOWN to the client).
    NoStatus,
    /// Dropped before any status: the client cancelled or went away.
    Dropped,
}

impl End<'_> {
    /// The gRPC status code the client saw, as sent (an upstream may send a code past 16).
    pub fn code(&self) -> usize {
        match self {
            End::Status(c) => *c,
            End::Failed(e) | End::BodyError(e) => status_of(e).code as usize,
            End::NoStatus => Code::Unknown as usize,
            End::Dropped => Code::Cancelled as usize,
        }
    }
}

/// A stage that watches whole calls.
pub trait Observer: Clone + Send + Sync + Unpin + 'static {
    /// What is kept about one call between its start and its end.
    type Call: Send + Unpin + 'static;

    /// A call starts: `Ok(Some)` watches it (the observer may also wrap the request body to
    /// watch it), `Ok(None)` lets it pass unwatched, `Err` refuses it.
    fn start(&self, req: &mut Request) -> Result<Option<Self::Call>, Rejected>;

    /// The response head arrived (its extensions name the upstream group and endpoint).
    fn head(&self, _call: &mut Self::Call, _resp: &Response) {}

    /// A response DATA frame went by.
    fn data(&self, _call: &mut Self::Call, _data: &[u8]) {}

    /// The call ended; called exactly once per watched call.
    fn end(&self, call: Self::Call, end: End<'_>);
}

/// The layer of an [`Observer`] stage.
#[derive(Clone)]
pub struct ObserveLayer<O>(pub O);

impl<S, O: Clone> Layer<S> for ObserveLayer<O> {
    type Service = Observed<S, O>;

    fn layer(&self, inner: S) -> Observed<S, O> {
        Observed {
            inner,
            observer: self.0.clone(),
        }
    }
}

/// An [`Observer`] stage around `S`.
#[derive(Clone)]
pub struct Observed<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> Service<Request> for Observed<S, O>
where
    S: Service<Request, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
    O: Observer,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let call = match self.observer.start(&mut req) {
            Ok(Some(call)) => call,
            Ok(None) => return Box::pin(self.inner.call(req)),
            Err(r) => return Box::pin(std::future::ready(Err(r.into()))),
        };
        let mut watching = Watching {
            observer: self.observer.clone(),
            call: Some(call),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    if let Some(call) = watching.call.as_mut() {
                        watching.observer.head(call, &resp);
                    }
                    if let Some(code) = status_code(resp.headers()) {
                        watching.finish(End::Status(code));
                        return Ok(resp);
                    }
                    Ok(resp.map(|body| body.watched(watching)))
                }
                Err(e) => {
                    watching.finish(End::Failed(&e));
                    Err(e)
                }
            }
        })
    }
}

/// One watched call: ends it once, at its status or when dropped first.
struct Watching<O: Observer> {
    observer: O,
    call: Option<O::Call>,
}

impl<O: Observer> Watching<O> {
    fn finish(&mut self, end: End<'_>) {
        if let Some(call) = self.call.take() {
            self.observer.end(call, end);
        }
    }
}

impl<O: Observer> Drop for Watching<O> {
    fn drop(&mut self) {
        self.finish(End::Dropped);
    }
}

impl<O: Observer> Watch for Watching<O> {
    fn seen(&mut self, what: Seen<'_>) {
        match what {
            Seen::Data(d) => {
                if let Some(call) = self.call.as_mut() {
                    self.observer.data(call, d);
                }
            }
            Seen::Trailers(t) => {
                self.finish(End::Status(
                    status_code(t).unwrap_or(Code::Unknown as usize),
                ));
            }
            Seen::Error(e) => self.finish(End::BodyError(e)),
            Seen::End => self.finish(End::NoStatus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_reports_the_code_the_client_saw() {
        // An upstream's code past 16 is reported as sent (the access log writes it); the
        // metrics stage folds it into its last label itself.
        assert_eq!(End::Status(99).code(), 99);
        assert_eq!(End::Status(0).code(), 0);
        assert_eq!(End::NoStatus.code(), Code::Unknown as usize);
        assert_eq!(End::Dropped.code(), Code::Cancelled as usize);
        let refused: BoxError = Rejected::new(Code::PermissionDenied, "no").into();
        assert_eq!(
            End::Failed(&refused).code(),
            Code::PermissionDenied as usize
        );
    }
}
