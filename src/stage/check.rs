//! The service shape shared by stages that decide on the request head alone (`rate_limit`,
//! `api_key`, `jwt`, `access`): check, then either call the inner service or answer with the
//! rejection, attributed to the stage. No allocation and no boxing on either path.

use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use tower::{Layer, Service};

use crate::stack::Rejected;
use crate::stack::{BoxError, Request, Response};

/// A stage that admits, rewrites or refuses a call from its head.
pub trait Check: Clone {
    /// The stage's kind as written in YAML (for rejections and metrics).
    const KIND: &'static str;

    /// Admits the call (possibly rewriting its headers and extensions) or refuses it.
    fn check(&self, req: &mut Request) -> Result<(), Rejected>;
}

/// A [`Check`] as a tower layer.
#[derive(Clone)]
pub struct CheckLayer<C>(pub C);

impl<S, C: Check> Layer<S> for CheckLayer<C> {
    type Service = Checked<S, C>;

    fn layer(&self, inner: S) -> Checked<S, C> {
        Checked {
            inner,
            check: self.0.clone(),
        }
    }
}

/// The service of a [`Check`] stage around `S`.
#[derive(Clone)]
pub struct Checked<S, C> {
    inner: S,
    check: C,
}

impl<S, C> Service<Request> for Checked<S, C>
where
    S: Service<Request, Response = Response, Error = BoxError>,
    C: Check,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Either<S::Future, Ready<Result<Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(r) => Either::Right(future::ready(Err(r.by(C::KIND).into()))),
        }
    }
}
