//! Write batching under h2. h2 ends every DATA frame of more than 256 bytes with a flush, and
//! so with a `writev` of its own: a 64 KiB message is four system calls of 16 KiB, and each
//! one runs the whole TCP send path (and, on loopback, the receiver's). [`Batched`] copies
//! writes into one buffer of up to [`LIMIT`] bytes and makes a flush lazy: the first flush
//! after new data only wakes the connection's task again, so frames that other streams queue
//! meanwhile join the same `writev`; the next flush (h2 flushes at the end of every poll of a
//! connection) writes everything. Writes of at least [`LIMIT`] bytes go straight through.
//!
//! Nothing waits on a timer: a deferred flush is at most one scheduler round late, and closing
//! the connection (`poll_shutdown`) writes what is buffered first. Until the peer has sent its
//! first bytes nothing is deferred, so a handshake never waits on a task being polled again.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before they are written; also the size from which a write bypasses the
/// buffer.
pub const LIMIT: usize = 64 * 1024;

/// A batch at least this large keeps the buffer's allocation for the next one.
const KEEP: usize = 16 * 1024;

/// An I/O stream whose writes are batched as described in the module docs.
pub struct Batched<T> {
    inner: T,
    /// Bytes accepted and not yet written, from `written` on. Its allocation is kept while
    /// writes are large (allocating and touching fresh pages for every batch cost page faults)
    /// and given back after a small batch, so a lightly used or idle connection holds little.
    buf: Vec<u8>,
    written: usize,
    /// A flush was put off; the next one writes.
    deferred: bool,
    /// Flushes are put off only once the peer has sent something, so the handshake's first
    /// flight (preface, SETTINGS) never waits on the other side.
    peer_spoke: bool,
    /// When set, the time of the last read that brought bytes ([`crate::clock::now_ms`]): what
    /// keepalive looks at to tell a quiet connection from a busy one.
    last_read: Option<Arc<AtomicU64>>,
}

impl<T> Batched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Batched<T> {
        Batched {
            inner,
            buf: Vec::new(),
            written: 0,
            deferred: false,
            peer_spoke: false,
            last_read: None,
        }
    }

    /// Wraps `inner`, writing the time of every read that brings bytes into `last_read`.
    pub fn watched(inner: T, last_read: Arc<AtomicU64>) -> Batched<T> {
        last_read.store(crate::clock::now_ms(), Ordering::Relaxed);
        Batched {
            last_read: Some(last_read),
            ..Batched::new(inner)
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Batched<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.len() < KEEP {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        self.deferred = false;
        Poll::Ready(Ok(()))
    }

    /// Copies as much of `bufs` as fits; returns how much that was.
    fn append(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(LIMIT - self.buf.len());
            if self.buf.capacity() - self.buf.len() < n {
                // Grow by doubling from 8 KiB, never past LIMIT.
                let want = (self.buf.len() + n)
                    .next_power_of_two()
                    .clamp(8 * 1024, LIMIT);
                self.buf.reserve_exact(want - self.buf.len());
            }
            self.buf.extend_from_slice(&b[..n]);
            taken += n;
            if n < b.len() {
                break;
            }
        }
        taken
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.peer_spoke = true;
            if let Some(t) = &this.last_read {
                t.store(crate::clock::now_ms(), Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buffered() == 0 && total >= LIMIT {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if this.buf.len() == LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        // Take what fits (a short write, which the caller continues), so every write of a
        // long run is a full buffer.
        Poll::Ready(Ok(this.append(bufs)))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered() > 0 {
            if !this.deferred && this.peer_spoke {
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
        }
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn pair() -> (Batched<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = l.accept().await.unwrap();
        (Batched::new(ours), theirs)
    }

    /// Reads exactly `want` (a generous bound only catches a hang).
    async fn expect(peer: &mut TcpStream, want: &[u8]) {
        let mut got = vec![0; want.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            peer.read_exact(&mut got),
        )
        .await
        .expect("the bytes arrive")
        .unwrap();
        assert_eq!(got, want);
    }

    /// Nothing is readable, even after a pause.
    async fn nothing(peer: &mut TcpStream) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut buf = [0u8; 64];
        assert!(peer.try_read(&mut buf).is_err(), "held back");
    }

    #[tokio::test]
    async fn first_flight_goes_at_once_then_one_flush_is_put_off() {
        let (mut io, mut peer) = pair().await;
        io.write_all(b"preface").await.unwrap();
        io.flush().await.unwrap();
        expect(&mut peer, b"preface").await;

        peer.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.unwrap();

        io.write_all(b"frame").await.unwrap();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the task is polled again"
        );
        nothing(&mut peer).await;
        io.write_all(b"+more").await.unwrap();
        io.flush().await.unwrap();
        expect(&mut peer, b"frame+more").await;
    }

    #[tokio::test]
    async fn long_runs_and_shutdown_lose_nothing() {
        let (mut io, mut peer) = pair().await;
        io.write_all(b"hi").await.unwrap();
        io.flush().await.unwrap();
        peer.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.unwrap();

        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut sent = b"hi".to_vec();
        for i in 0..40u32 {
            // h2's shape: a 9-byte head and a payload, as one vectored write.
            let head = [i as u8; 9];
            let body = vec![(i * 7) as u8; 1000 + 997 * i as usize];
            let mut bufs = [io::IoSlice::new(&head), io::IoSlice::new(&body)];
            let mut bufs = &mut bufs[..];
            while !bufs.is_empty() {
                let n = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, bufs))
                    .await
                    .unwrap();
                io::IoSlice::advance_slices(&mut bufs, n);
            }
            sent.extend_from_slice(&head);
            sent.extend_from_slice(&body);
            assert!(io.buffered() <= LIMIT);
        }
        let big = vec![9u8; 3 * LIMIT];
        io.write_all(&big).await.unwrap();
        sent.extend_from_slice(&big);
        io.write_all(b"tail").await.unwrap();
        sent.extend_from_slice(b"tail");
        io.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), sent);
    }
}
