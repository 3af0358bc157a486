//! Active health checks: each endpoint of a group with `health_check:` is checked every
//! `interval` (±10% jitter) — with the gRPC health protocol (`grpc.health.v1.Health/Check` on a
//! fresh HTTP/2 connection, healthy when it answers SERVING) or a TCP connect. After
//! `unhealthy_threshold` failures in a row the endpoint leaves rotation (every worker's
//! balancer skips it); after `healthy_threshold` passes in a row it comes back.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::tls::{ClientTls, Io};

/// An endpoint's active-health state, shared by every worker; only the checker writes it.
#[derive(Default)]
pub struct Health {
    unhealthy: std::sync::atomic::AtomicBool,
}

impl Health {
    /// Whether the checks consider the endpoint healthy (true without checks).
    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the endpoint healthy or not; true when it came back (was unhealthy, now healthy).
    fn set(&self, healthy: bool) -> bool {
        let was = !self
            .unhealthy
            .swap(!healthy, std::sync::atomic::Ordering::Relaxed);
        healthy && !was
    }
}

/// An endpoint as its checker sees it (implemented by the upstream endpoint's shared state).
pub trait Checked: Send + Sync + 'static {
    /// Its health state.
    fn health(&self) -> &Health;
    /// Called when the endpoint comes back into rotation (it slow-starts).
    fn rejoined(&self);
}

/// The largest health answer read.
const MAX_ANSWER: usize = 1024;

/// Starts the checks of each endpoint of group `upstream` on the current runtime; they end
/// when `stop` turns true or `retire` changes or closes.
pub fn spawn<E: Checked>(
    upstream: &Arc<str>,
    endpoints: &[(String, Arc<E>)],
    cfg: &HealthCheckConfig,
    tls: Option<Arc<ClientTls>>,
    stop: watch::Receiver<bool>,
    retire: watch::Receiver<bool>,
) {
    for (address, state) in endpoints {
        let checker = Checker {
            tls: tls.clone(),
            upstream: upstream.clone(),
            address: address.clone(),
            state: state.clone() as Arc<dyn Checked>,
            cfg: cfg.clone(),
        };
        tokio::spawn(checker.run(stop.clone(), retire.clone()));
    }
}

struct Checker {
    tls: Option<Arc<ClientTls>>,
    upstream: Arc<str>,
    address: String,
    state: Arc<dyn Checked>,
    cfg: HealthCheckConfig,
}

impl Checker {
    async fn run(self, mut stop: watch::Receiver<bool>, mut retire: watch::Receiver<bool>) {
        let (mut passes, mut fails) = (0u32, 0u32);
        // The first check comes at a random point of the first interval, so endpoints (and
        // gateways) started together do not check in step.
        let mut wait = self.cfg.interval.0.mul_f64(rand::random::<f64>());
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
                _ = retire.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            wait = self
                .cfg
                .interval
                .0
                .mul_f64(0.9 + 0.2 * rand::random::<f64>());
            let outcome = match tokio::time::timeout(self.cfg.timeout.0, self.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", self.cfg.timeout.0)),
            };
            let (upstream, endpoint) = (&*self.upstream, &*self.address);
            match outcome {
                Ok(()) => {
                    fails = 0;
                    passes = passes.saturating_add(1);
                    let health = self.state.health();
                    if !health.healthy() && passes >= self.cfg.healthy_threshold {
                        if health.set(true) {
                            self.state.rejoined();
                        }
                        tracing::info!(upstream, endpoint, "health check passed; back in rotation");
                    }
                }
                Err(why) => {
                    passes = 0;
                    fails = fails.saturating_add(1);
                    if self.state.health().healthy() && fails >= self.cfg.unhealthy_threshold {
                        self.state.health().set(false);
                        tracing::warn!(
                            upstream,
                            endpoint,
                            "health check failed {fails} times; out of rotation: {why}"
                        );
                    } else {
                        tracing::debug!(upstream, endpoint, "health check failed: {why}");
                    }
                }
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match self.cfg.kind {
            HealthCheckKind::Tcp => Ok(()),
            HealthCheckKind::Grpc => {
                let _ = tcp.set_nodelay(true);
                let io = match &self.tls {
                    Some(tls) => tls.connect(&self.address, tcp).await?,
                    None => Io::Plain(tcp),
                };
                grpc_check(io, &self.address, &self.cfg.service).await
            }
        }
    }
}

/// Aborts the connection task when the check ends, however it ends.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn grpc_check(io: Io, address: &str, service: &str) -> Result<(), String> {
    let (send, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let _conn = Abort(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut send = send.ready().await.map_err(|e| e.to_string())?;
    let req = http::Request::post(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "synapsor-health-check")
        .body(())
        .map_err(|e| e.to_string())?;
    let (resp, mut tx) = send.send_request(req, false).map_err(|e| e.to_string())?;
    tx.send_data(request_message(service), true)
        .map_err(|e| e.to_string())?;
    let resp = resp.await.map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()));
    }
    if let Some(code) = crate::grpc::status_code(resp.headers()) {
        return Err(format!("grpc-status {code}"));
    }
    let mut body = resp.into_body();
    let mut answer = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
        if answer.len() > MAX_ANSWER {
            return Err("answer too long".into());
        }
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    match trailers.as_ref().and_then(crate::grpc::status_code) {
        Some(0) => {}
        Some(code) => return Err(format!("grpc-status {code}")),
        None => return Err("no grpc-status".into()),
    }
    match serving_status(&answer) {
        Some(1) => Ok(()),
        Some(s) => Err(format!(
            "status {}",
            match s {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "unexpected",
            }
        )),
        None => Err("malformed answer".into()),
    }
}

/// A framed `HealthCheckRequest { service }` (field 1, a string; empty when `service` is).
fn request_message(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0A);
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed.into()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of a framed `HealthCheckResponse`; 0 (UNKNOWN) when absent.
fn serving_status(framed: &[u8]) -> Option<u64> {
    if framed.len() < 5 || framed[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
    let mut msg = framed.get(5..5 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match key & 7 {
            0 => {
                let v = varint(&mut msg)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = varint(&mut msg)? as usize;
                msg = msg.get(n..)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_request_and_reads_the_status() {
        assert_eq!(&request_message("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_message("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0A, 3, b'a', b'.', b'B']
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 0]),
            Some(0),
            "absent is UNKNOWN"
        );
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "truncated");
    }
}
