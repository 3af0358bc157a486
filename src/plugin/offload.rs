//! Where plugin code runs. A hook call starts on the worker that serves its stream, and most
//! calls end there within their first slice (a plugin call takes a few microseconds). A call
//! still running when its first epoch tick makes it yield — guest code that spins, allocates or
//! calls the host in a loop — or that waits for a free instance, moves to the plugin threads
//! and finishes there: the worker goes back to its sockets at once.
//!
//! The measured reason (`tests/it/plugin_safety.rs`, docs/BENCHMARKS.md): a worker is a
//! current-thread tokio runtime, which polls its sockets only every few dozen task polls; a
//! plugin call yielding each millisecond of a 50 ms timeout kept other connections' 5 ms calls
//! waiting 106–114 ms. On the plugin threads such a call costs its worker at most one tick.
//!
//! The plugin threads are a small multi-threaded runtime (one thread per core) whose threads run
//! at nice 10, so the kernel prefers the gateway's workers over guest code when both want a
//! core.

use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::task::Poll;

use super::host::HostWait;
use super::task::AbortOnDrop;
use super::Failure;

static MOVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Hook calls moved to the plugin threads since start.
pub fn moved() -> u64 {
    MOVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The niceness of plugin threads (0 is the workers'; higher yields the CPU sooner).
pub const PLUGIN_THREAD_NICE: i32 = 10;

fn runtime() -> Result<&'static tokio::runtime::Runtime, Failure> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            // `blocking`: message (de)compression, a few at a time; more wait their turn.
            .max_blocking_threads(threads)
            .thread_name("synapsor-plugin")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the plugin threads: {e}"))
    })
    .as_ref()
    .map_err(|e| Failure::Trap(e.clone()))
}

/// Lowers the calling thread's scheduling priority (Linux: niceness is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), PLUGIN_THREAD_NICE) {
            tracing::debug!("plugin thread keeps its priority: {e}");
        }
    }
}

/// Runs a hook call: polled here, and moved to the plugin threads once it is pending for any
/// reason but a wait in a host function (`host_wait` raised: a callout or a Redis round trip,
/// during which no guest code runs — moving it would only add two thread hops per wait).
/// Dropping the returned future (the client went away) stops the call wherever it runs.
pub async fn run<F, T>(host_wait: Option<HostWait>, call: F) -> Result<T, Failure>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
{
    let mut call = Box::pin(call);
    let waits = |w: &Option<HostWait>| w.as_ref().is_some_and(|w| w.load(Ordering::Relaxed));
    let here = poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending if waits(&host_wait) => Poll::Pending,
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(out) = here {
        return out;
    }
    MOVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut task = AbortOnDrop(runtime()?.spawn(call));
    match (&mut task).await {
        Ok(out) => out,
        Err(e) => Err(Failure::Trap(format!("plugin thread: {e}"))),
    }
}

/// Runs work that is the gateway's, not the guest's, but may be long — decompressing a message
/// (a few KiB on the wire can inflate to `max_message_size`) or compressing a replacement — on
/// the plugin runtime's blocking threads (as many as cores, at the plugin threads' lower
/// priority), so the worker goes back to its sockets.
pub async fn blocking<T, F>(work: F) -> Result<T, Failure>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match runtime()?.spawn_blocking(work).await {
        Ok(out) => Ok(out),
        Err(e) => Err(Failure::Trap(format!("plugin thread: {e}"))),
    }
}
