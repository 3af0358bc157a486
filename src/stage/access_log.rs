//! `access_log`: one line per finished call — time, peer, principal, method, upstream endpoint,
//! status, duration, bytes each way — as `key=value` text or JSON, to stdout or a file, for a
//! sampled share of calls. Lines go through a bounded queue to a writer thread, so a slow disk
//! never stalls a call; when the queue is full a line is dropped (and counted in the log).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::observe::{End, ObserveLayer, Observer};
use crate::config::{AccessLogConfig, LogFormat};
use crate::stack::{status_of, Rejected, Request, Response, Seen, Watch};
use crate::stack::{PeerAddr, Principal, PrincipalSlot, UpstreamEndpoint};

/// Lines queued for the writer at most.
const QUEUE: usize = 8192;

struct Shared {
    format: LogFormat,
    sample: f64,
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

/// One `access_log` stage.
#[derive(Clone)]
pub struct AccessLogStage {
    shared: Arc<Shared>,
}

/// The layer of an `access_log` stage.
pub type AccessLogLayer = ObserveLayer<AccessLogStage>;

impl AccessLogStage {
    /// Opens the output and starts the writer thread.
    pub fn layer(cfg: &AccessLogConfig) -> Result<AccessLogLayer, String> {
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
        Ok(ObserveLayer(AccessLogStage {
            shared: Arc::new(Shared {
                format: cfg.format,
                sample: cfg.sample,
                tx,
                dropped: AtomicU64::new(0),
            }),
        }))
    }
}

/// What is known of a call when it starts.
pub struct Entry {
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
}

impl Entry {
    fn write(mut self, s: &Shared, code: usize) {
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

impl Observer for AccessLogStage {
    type Call = Entry;

    fn start(&self, req: &mut Request) -> Result<Option<Entry>, Rejected> {
        let s = &self.shared;
        if s.sample < 1.0 && rand::random::<f64>() >= s.sample {
            return Ok(None);
        }
        let bytes_in = Arc::new(AtomicU64::new(0));
        let slot = PrincipalSlot::default();
        req.extensions_mut().insert(slot.clone());
        let ext = req.extensions();
        let entry = Entry {
            started: Instant::now(),
            at: SystemTime::now(),
            peer: ext
                .get::<PeerAddr>()
                .map(|p| p.0.to_string())
                .unwrap_or_default(),
            principal: ext
                .get::<Principal>()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            slot,
            method: req.uri().path().to_string(),
            upstream: String::new(),
            stage: String::new(),
            bytes_in: bytes_in.clone(),
            bytes_out: 0,
        };
        let body = std::mem::take(req.body_mut());
        *req.body_mut() = body.watched(Counted(bytes_in));
        Ok(Some(entry))
    }

    fn head(&self, entry: &mut Entry, resp: &Response) {
        if let Some(u) = resp.extensions().get::<UpstreamEndpoint>() {
            entry.upstream = u.0.to_string();
        }
    }

    fn data(&self, entry: &mut Entry, data: &[u8]) {
        entry.bytes_out += data.len() as u64;
    }

    fn end(&self, mut entry: Entry, end: End<'_>) {
        let code = match end {
            // One status_of for both the stage and the code.
            End::Failed(e) => {
                let status = status_of(e);
                entry.stage = status.stage.unwrap_or_default();
                status.code as usize
            }
            _ => end.code(),
        };
        entry.write(&self.shared, code);
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
