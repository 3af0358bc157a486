//! [`Body`]: the one body type of the service stack, for requests and responses alike. It is an
//! h2 stream as it arrives (flow-control capacity released as frames are taken), an empty body,
//! or any boxed `http_body::Body` a stage or the forwarder wraps around it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::error::BoxError;

/// A streaming body of `Bytes` frames and optional trailers.
pub struct Body(Kind);

enum Kind {
    Empty,
    H2 {
        recv: RecvStream,
        data_done: bool,
        done: bool,
    },
    Boxed(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static>>),
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl Body {
    /// No frames at all.
    pub fn empty() -> Body {
        Body(Kind::Empty)
    }

    /// The body of an h2 stream.
    pub fn h2(recv: RecvStream) -> Body {
        let done = recv.is_end_stream();
        Body(Kind::H2 {
            recv,
            data_done: done,
            done,
        })
    }

    /// This body, with `watch` told of every frame, error and the end as they pass.
    pub fn watched<W: Watch>(self, watch: W) -> Body {
        Body::boxed(Watched { body: self, watch })
    }

    /// Any other body.
    pub fn boxed<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        Body(Kind::Boxed(Box::pin(body)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Boxed(b) => b.as_mut().poll_frame(cx),
            Kind::H2 {
                recv,
                data_done,
                done,
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                if !*data_done {
                    match ready!(recv.poll_data(cx)) {
                        Some(Ok(data)) => {
                            let _ = recv.flow_control().release_capacity(data.len());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Some(Err(e)) => {
                            *done = true;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        None => *data_done = true,
                    }
                }
                let trailers = ready!(recv.poll_trailers(cx));
                *done = true;
                match trailers {
                    Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    Ok(None) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::H2 { done, .. } => *done,
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::H2 { .. } => SizeHint::default(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

/// What a [`Watch`] is told about.
pub enum Seen<'a> {
    /// A DATA frame.
    Data(&'a Bytes),
    /// The trailers.
    Trailers(&'a HeaderMap),
    /// The body failed.
    Error(&'a BoxError),
    /// The body ended (after its trailers, if it had any).
    End,
}

/// Observes a body without changing it (counters, metrics, the access log, a held permit).
pub trait Watch: Send + Unpin + 'static {
    /// Called for every frame, error and the end, in order.
    fn seen(&mut self, what: Seen<'_>);
}

struct Watched<W> {
    body: Body,
    watch: W,
}

impl<W: Watch> http_body::Body for Watched<W> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &polled {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.watch.seen(Seen::Data(d));
                } else if let Some(t) = f.trailers_ref() {
                    this.watch.seen(Seen::Trailers(t));
                }
            }
            Some(Err(e)) => this.watch.seen(Seen::Error(e)),
            None => this.watch.seen(Seen::End),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
