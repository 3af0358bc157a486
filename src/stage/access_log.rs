//! `access_log`: one line per finished call — time, peer, principal, method, upstream endpoint,
//! status, duration, bytes each way — as `key=value` text or JSON, to stdout or a file, for a
//! sampled share of calls. Lines go through a bounded queue to a writer thread, so a slow disk
//! never stalls a call; when the queue is full a line is dropped (and counted in the log).

use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tower::{Layer, Service};

use crate::config::{AccessLogConfig, LogFormat};
use crate::grpc::{status_code, Code};
use crate::stack::{status_of, BoxError, Request, Response, Seen, Watch};
use crate::stack::{PeerAddr, Principal, PrincipalSlot, UpstreamEndpoint};

/// Lines queued for the writer at most.
const QUEUE: usize = 8192;

struct Shared {
    format: LogFormat,
    sample: f64,
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

/// The layer of one `access_log` stage.
#[derive(Clone)]
pub struct AccessLogLayer {
    shared: Arc<Shared>,
}

impl AccessLogLayer {
    /// Opens the output and starts the writer thread.
    pub fn new(cfg: &AccessLogConfig) -> Result<AccessLogLayer, String> {
        let mut out: Box<dyn std::io::Write + Send> = if cfg.output == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&cfg.output)
                    .map_err(|e| format!("cannot open {}: {e}", cfg.output))?,
            )
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("synapsor-access-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Write what else is queued, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(AccessLogLayer {
            shared: Arc::new(Shared {
                format: cfg.format,
                sample: cfg.sample,
                tx,
                dropped: AtomicU64::new(0),
            }),
        })
    }
}

/// What is known of a call when it starts.
struct Entry {
    shared: Arc<Shared>,
    started: Instant,
    at: SystemTime,
    peer: String,
    principal: String,
    /// Filled by a later auth stage.
    slot: PrincipalSlot,
    method: String,
    upstream: String,
    /// The stage that refused the call (`wasm:NAME`, `rate_limit`…), if one did.
    stage: String,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    done: bool,
}

impl Entry {
    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let s = &self.shared;
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let ts = rfc3339(self.at);
        if self.principal.is_empty() {
            if let Some(p) = self.slot.0.get() {
                self.principal = p.clone();
            }
        }
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let mut line = String::with_capacity(256);
        match s.format {
            LogFormat::Json => {
                let v = serde_json::json!({
                    "ts": ts, "peer": self.peer, "principal": self.principal,
                    "method": self.method, "upstream": self.upstream, "stage": self.stage,
                    "grpc_status": code,
                    "duration_ms": (ms * 1000.0).round() / 1000.0,
                    "bytes_in": bytes_in, "bytes_out": self.bytes_out,
                });
                let _ = writeln!(line, "{v}");
            }
            LogFormat::Text => {
                let _ = writeln!(
                    line,
                    "{ts} peer={} principal={} method={} upstream={} stage={} grpc_status={code} duration_ms={ms:.3} bytes_in={bytes_in} bytes_out={}",
                    or_dash(&self.peer), or_dash(&self.principal), or_dash(&self.method),
                    or_dash(&self.upstream), or_dash(&self.stage), self.bytes_out
                );
            }
        }
        if let Err(TrySendError::Full(_)) = s.tx.try_send(line) {
            let n = s.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "access log writer is behind; lines dropped");
            }
        }
    }
}

/// Counts the bytes of the client's request.
struct Counted(Arc<AtomicU64>);

impl Watch for Counted {
    fn seen(&mut self, what: Seen<'_>) {
        if let Seen::Data(d) = what {
            self.0.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Counts the response's bytes and writes the line when the status goes by.
impl Watch for Entry {
    fn seen(&mut self, what: Seen<'_>) {
        match what {
            Seen::Data(d) => self.bytes_out += d.len() as u64,
            Seen::Trailers(t) => self.finish(status_code(t).unwrap_or(Code::Unknown as usize)),
            Seen::Error(e) => self.finish(status_of(e).code as usize),
            Seen::End => self.finish(Code::Unknown as usize),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.finish(Code::Cancelled as usize);
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `2026-11-24T21:05:18.123Z` (UTC), without a date library.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            layer: self.clone(),
        }
    }
}

/// The `access_log` service around `S`.
#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    layer: AccessLogLayer,
}

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let s = &self.layer.shared;
        if s.sample < 1.0 && rand::random::<f64>() >= s.sample {
            return Box::pin(self.inner.call(req));
        }
        let bytes_in = Arc::new(AtomicU64::new(0));
        let slot = PrincipalSlot::default();
        let mut req = req;
        req.extensions_mut().insert(slot.clone());
        let mut entry = Entry {
            shared: s.clone(),
            started: Instant::now(),
            at: SystemTime::now(),
            peer: req
                .extensions()
                .get::<PeerAddr>()
                .map(|p| p.0.to_string())
                .unwrap_or_default(),
            principal: req
                .extensions()
                .get::<Principal>()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            slot,
            method: req.uri().path().to_string(),
            upstream: String::new(),
            stage: String::new(),
            bytes_in: bytes_in.clone(),
            bytes_out: 0,
            done: false,
        };
        let req = req.map(|body| body.watched(Counted(bytes_in)));
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    if let Some(u) = resp.extensions().get::<UpstreamEndpoint>() {
                        entry.upstream = u.0.to_string();
                    }
                    if let Some(code) = status_code(resp.headers()) {
                        entry.finish(code);
                        return Ok(resp);
                    }
                    Ok(resp.map(|body| body.watched(entry)))
                }
                Err(e) => {
                    let status = status_of(&e);
                    entry.stage = status.stage.unwrap_or_default();
                    entry.finish(status.code as usize);
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_900_000_123);
        assert_eq!(rfc3339(t), "2026-11-28T21:06:40.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
