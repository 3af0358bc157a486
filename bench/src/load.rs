//! The loads: each runs for a fixed time against one address and reports calls (or messages),
//! bytes, latencies and errors. Every loop is bounded by the deadline and stops by itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use synapsor_testkit::{EchoClient, EchoRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// One of the benchmark loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// 100 B each way, 64 concurrent streams over 4 connections.
    Unary100,
    /// 1 MiB each way, 8 concurrent streams over 4 connections.
    Unary1M,
    /// Server streaming of 100 B messages, 4 streams over 4 connections.
    Stream100,
    /// Server streaming of 64 KiB messages, 4 streams over 4 connections.
    Stream64K,
    /// Bidi ping-pong of 100 B, 64 streams over 4 connections.
    PingPong,
    /// Bidi ping-pong of 1 KiB messages whose payload is itself a protobuf message (a 20-byte
    /// name in field 1, a 30-byte e-mail in field 2, filler bytes in field 3): what
    /// `pii-redact` with `fields: ["1.1", "1.2"]` rewrites. Only on request.
    PingPong1K,
    /// Small unary again, from `h2load` instead of tonic (see `h2load.rs`); only on request.
    Unary100H2load,
}

impl Load {
    /// All loads, in report order.
    pub const ALL: [Load; 5] = [
        Load::Unary100,
        Load::Unary1M,
        Load::Stream100,
        Load::Stream64K,
        Load::PingPong,
    ];

    /// Every load `--loads` accepts: the default ones and those run only on request.
    pub const KNOWN: [Load; 7] = [
        Load::Unary100,
        Load::Unary1M,
        Load::Stream100,
        Load::Stream64K,
        Load::PingPong,
        Load::PingPong1K,
        Load::Unary100H2load,
    ];

    /// Short name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Load::Unary100 => "unary-100b",
            Load::Unary1M => "unary-1mib",
            Load::Stream100 => "stream-100b",
            Load::Stream64K => "stream-64kib",
            Load::PingPong => "pingpong-100b",
            Load::PingPong1K => "pingpong-1kib",
            Load::Unary100H2load => "unary-100b-h2load",
        }
    }

    /// What one unit of throughput is.
    pub fn unit(self) -> &'static str {
        match self {
            Load::Unary100 | Load::Unary1M | Load::Unary100H2load => "calls/s",
            Load::Stream100 | Load::Stream64K => "msgs/s",
            Load::PingPong | Load::PingPong1K => "round trips/s",
        }
    }

    fn streams(self) -> usize {
        match self {
            Load::Unary100 | Load::PingPong | Load::PingPong1K | Load::Unary100H2load => 64,
            Load::Unary1M => 8,
            Load::Stream100 | Load::Stream64K => 4,
        }
    }
}

/// What one load run measured.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Calls, messages or round trips completed.
    pub count: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Failed calls.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per-call (or per-round-trip) latencies in microseconds; empty for streaming loads.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    /// Units per second.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in microseconds, if measured.
    pub fn quantile(&mut self, q: f64) -> Option<u32> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 * q) as usize).min(self.latencies_us.len() - 1);
        Some(self.latencies_us[i])
    }
}

const CONNECTIONS: usize = 4;

async fn channels(addr: SocketAddr) -> anyhow::Result<Vec<EchoClient<Channel>>> {
    let mut v = Vec::new();
    for _ in 0..CONNECTIONS {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .initial_stream_window_size(256 * 1024)
            .initial_connection_window_size(1024 * 1024)
            .connect()
            .await?;
        v.push(
            EchoClient::new(ch)
                .max_decoding_message_size(8 << 20)
                .max_encoding_message_size(8 << 20),
        );
    }
    Ok(v)
}

/// Runs `load` against `addr` for `duration` after a short warm-up on the same connections;
/// `measuring` is called between the two, so the proxy's CPU is read over the same window as
/// the calls are counted.
pub async fn run(
    load: Load,
    addr: SocketAddr,
    duration: Duration,
    measuring: impl FnOnce(),
) -> anyhow::Result<Outcome> {
    if load == Load::Unary100H2load {
        anyhow::bail!("{} is run by h2load::run", load.name());
    }
    let clients = channels(addr).await?;
    // Warm-up: connections, pools and caches on every path.
    one_round(load, &clients, Duration::from_millis(300)).await;
    measuring();
    Ok(one_round(load, &clients, duration).await)
}

async fn one_round(load: Load, clients: &[EchoClient<Channel>], duration: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for i in 0..load.streams() {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(worker(load, client, deadline)));
    }
    let mut total = Outcome::default();
    for t in tasks {
        if let Ok(o) = t.await {
            total.count += o.count;
            total.bytes += o.bytes;
            total.errors += o.errors;
            total.latencies_us.extend(o.latencies_us);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The API key every call carries (the `synapsor+stages` target checks it; others ignore it).
pub const API_KEY: &str = "bench-key-0001";

fn keyed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "x-api-key",
        tonic::metadata::MetadataValue::from_static(API_KEY),
    );
    r
}

/// How long past the deadline a call may take before it counts as an error (so a proxy that
/// stalls cannot hang the benchmark).
const GRACE: Duration = Duration::from_secs(3);

async fn worker(load: Load, c: EchoClient<Channel>, deadline: Instant) -> Outcome {
    let mut o = Outcome::default();
    let limit = tokio::time::Instant::from_std(deadline + GRACE);
    if tokio::time::timeout_at(limit, work(load, c, deadline, &mut o))
        .await
        .is_err()
    {
        o.errors += 1;
    }
    o
}

async fn work(load: Load, mut c: EchoClient<Channel>, deadline: Instant, o: &mut Outcome) {
    match load {
        Load::Unary100 | Load::Unary1M => {
            let size = if load == Load::Unary100 { 100 } else { 1 << 20 };
            let payload = vec![0x42u8; size];
            while Instant::now() < deadline {
                let t = Instant::now();
                let req = EchoRequest {
                    payload: payload.clone(),
                    ..Default::default()
                };
                match c.unary(keyed(req)).await {
                    Ok(r) => {
                        o.count += 1;
                        o.bytes += r.get_ref().payload.len() as u64;
                        o.latencies_us.push(t.elapsed().as_micros() as u32);
                    }
                    Err(_) => o.errors += 1,
                }
            }
        }
        Load::Stream100 | Load::Stream64K => {
            let size = if load == Load::Stream100 {
                100
            } else {
                64 * 1024
            };
            let req = EchoRequest {
                reply_count: u32::MAX,
                reply_size: size,
                ..Default::default()
            };
            match c.server_stream(keyed(req)).await {
                Ok(r) => {
                    let mut s = r.into_inner();
                    while Instant::now() < deadline {
                        match s.next().await {
                            Some(Ok(m)) => {
                                o.count += 1;
                                o.bytes += m.payload.len() as u64;
                            }
                            _ => {
                                o.errors += 1;
                                break;
                            }
                        }
                    }
                }
                Err(_) => o.errors += 1,
            }
        }
        // Never started here (`run` refuses it): h2load runs it.
        Load::Unary100H2load => {}
        Load::PingPong | Load::PingPong1K => {
            let (tx, rx) = mpsc::channel(1);
            let msg = EchoRequest {
                payload: if load == Load::PingPong {
                    vec![0x42; 100]
                } else {
                    person_1k()
                },
                ..Default::default()
            };
            let _ = tx.send(msg.clone()).await;
            let mut t = Instant::now();
            let Ok(r) = c.bidi(keyed(ReceiverStream::new(rx))).await else {
                o.errors += 1;
                return;
            };
            let mut s = r.into_inner();
            loop {
                match s.next().await {
                    Some(Ok(m)) => {
                        o.count += 1;
                        o.bytes += m.payload.len() as u64;
                        o.latencies_us.push(t.elapsed().as_micros() as u32);
                    }
                    _ => {
                        o.errors += 1;
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                t = Instant::now();
                if tx.send(msg.clone()).await.is_err() {
                    o.errors += 1;
                    break;
                }
            }
        }
    }
}

/// A 1 KiB protobuf message: field 1 a 20-byte name, field 2 a 30-byte e-mail address, field
/// 3 filler (protobuf encoding: tag byte, one- or two-byte length, bytes).
fn person_1k() -> Vec<u8> {
    let mut m = Vec::with_capacity(1024);
    m.push(0x0a);
    m.push(20);
    m.extend_from_slice(b"Ada Lovelace-Byron 1");
    m.push(0x12);
    m.push(30);
    m.extend_from_slice(b"ada.lovelace@example.invalid.x");
    let filler = 1024 - m.len() - 3;
    m.push(0x1a);
    m.push((filler as u8 & 0x7f) | 0x80);
    m.push((filler >> 7) as u8);
    m.resize(1024, 0x66);
    m
}
