//! [`AbortOnDrop`]: a task spawned for someone who waits for it, stopped when they stop waiting.

use std::future::Future;
use std::task::Poll;

/// A spawned task, awaited as its `JoinHandle` is, and aborted when the one waiting for it is
/// dropped (a moved hook call, a callout whose wait ended early).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
