//! The echo backend: a real tonic server on 127.0.0.1 that records what it sees.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::echo_server::{Echo, EchoServer};
use crate::pb::{EchoReply, EchoRequest};

/// What a backend has seen, shared with the test that started it.
#[derive(Default)]
pub struct Observed {
    /// Calls that reached a handler.
    pub calls: AtomicU64,
    /// Calls whose handler was dropped (client cancel or reset) before it finished.
    pub cancelled: AtomicU64,
    /// Calls currently inside a handler.
    pub in_flight: AtomicU64,
    /// TCP connections accepted so far.
    pub connections: AtomicU64,
    /// The `grpc-timeout` header of the most recent call, if any.
    pub last_timeout: Mutex<Option<String>>,
    /// The metadata of the most recent call.
    pub last_metadata: Mutex<Option<MetadataMap>>,
    /// When not 0, every unary call is answered with this gRPC code (a sick backend).
    pub failing: std::sync::atomic::AtomicI32,
}

impl Observed {
    /// Calls that reached a handler so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
    /// Handlers dropped before they finished so far.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
    /// Calls inside a handler now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
    /// From now on answer every unary call with gRPC code `code` (0: serve normally again).
    pub fn set_failing(&self, code: tonic::Code) {
        self.failing.store(code as i32, Ordering::SeqCst);
    }
}

/// How to start a [`Backend`].
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Address to bind; `127.0.0.1:0` when `None`.
    pub addr: Option<SocketAddr>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server announces.
    pub max_concurrent_streams: Option<u32>,
    /// Runtime worker threads; 0 runs the backend on one current-thread runtime.
    pub threads: usize,
    /// Serve TLS: (certificate chain PEM, key PEM, CA PEM that client certificates must
    /// chain to, if any).
    pub tls: Option<(String, String, Option<String>)>,
}

/// A running echo backend. Dropping it (or [`Backend::kill`]) stops it abruptly.
pub struct Backend {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its name, returned in every reply's `backend` field.
    pub name: String,
    /// What it has seen.
    pub observed: Arc<Observed>,
    /// Its `grpc.health.v1.Health` service: SERVING for the server as a whole (`""`) until a
    /// test sets another status (`set_service_status`).
    pub health: tonic_health::server::HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    drain: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1:0`.
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, BackendOptions::default()).await
    }

    /// Starts a backend with options. It runs on its own thread and tokio runtime, so that
    /// [`Backend::kill`] can end it the way a crashed process ends: every socket closes at once.
    pub async fn start_with(name: &str, opts: BackendOptions) -> Backend {
        let addr = opts.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let listener = std::net::TcpListener::bind(addr).expect("bind backend");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let observed = Arc::new(Observed::default());
        let svc = EchoService {
            name: name.to_string(),
            observed: observed.clone(),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (health, health_svc) = tonic_health::server::health_reporter();
        let threads = opts.threads;
        let counter = observed.clone();
        std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                let rt = if threads == 0 {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(threads);
                    b
                }
                .enable_all()
                .build()
                .expect("backend runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    let server = EchoServer::new(svc)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX);
                    let mut builder = tonic::transport::Server::builder();
                    if let Some((cert, key, ca)) = &opts.tls {
                        let mut tls = tonic::transport::ServerTlsConfig::new()
                            .identity(tonic::transport::Identity::from_pem(cert, key));
                        if let Some(ca) = ca {
                            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
                        }
                        builder = builder.tls_config(tls).expect("backend TLS config");
                    }
                    if let Some(n) = opts.max_concurrent_streams {
                        builder = builder.max_concurrent_streams(n);
                    }
                    let incoming = TcpListenerStream::new(listener).inspect(move |c| {
                        if c.is_ok() {
                            counter.connections.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    let serve = builder
                        .add_service(health_svc)
                        .add_service(server)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = drain_rx.await;
                        });
                    tokio::select! {
                        _ = serve => {}
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_background();
                let _ = done_tx.send(());
            })
            .expect("spawn backend thread");
        Backend {
            addr,
            name: name.to_string(),
            observed,
            health,
            stop: Some(stop_tx),
            drain: Some(drain_tx),
            done: Some(done_rx),
        }
    }

    /// Shuts the backend down gracefully, as a server being deployed away does: it stops
    /// accepting, sends GOAWAY on every connection, lets calls in flight finish, then ends.
    /// Returns at once; [`Backend::kill`] or dropping ends it for good.
    pub fn drain(&mut self) {
        if let Some(d) = self.drain.take() {
            let _ = d.send(());
        }
    }

    /// Stops the backend at once, as a crash would: its listener and every connection close.
    pub async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct EchoService {
    name: String,
    observed: Arc<Observed>,
}

/// Counts a call while its handler runs; counts it cancelled if dropped unfinished.
struct CallGuard {
    observed: Arc<Observed>,
    done: bool,
}

impl CallGuard {
    fn new<T>(observed: &Arc<Observed>, req: &Request<T>) -> CallGuard {
        observed.calls.fetch_add(1, Ordering::SeqCst);
        observed.in_flight.fetch_add(1, Ordering::SeqCst);
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        *observed.last_timeout.lock().unwrap() = timeout;
        *observed.last_metadata.lock().unwrap() = Some(req.metadata().clone());
        CallGuard {
            observed: observed.clone(),
            done: false,
        }
    }
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.observed.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.observed.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn failure(req: &EchoRequest) -> Option<Status> {
    if req.fail_code == 0 {
        return None;
    }
    let code = tonic::Code::from_i32(req.fail_code);
    let mut status = if req.fail_details.is_empty() {
        Status::new(code, req.fail_message.clone())
    } else {
        Status::with_details(
            code,
            req.fail_message.clone(),
            req.fail_details.clone().into(),
        )
    };
    status
        .metadata_mut()
        .insert("x-trailer", "failed".parse().unwrap());
    Some(status)
}

/// Copies every `x-*` request metadata entry into the response headers.
fn echo_metadata(from: &MetadataMap, to: &mut MetadataMap) {
    for kv in from.iter() {
        match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                to.append(k.clone(), v.clone());
            }
            tonic::metadata::KeyAndValueRef::Binary(k, v) if k.as_str().starts_with("x-") => {
                to.append_bin(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

impl EchoService {
    fn reply(&self, req: &EchoRequest, seq: u32) -> EchoReply {
        let payload = if req.reply_size > 0 {
            vec![0x5a; req.reply_size as usize]
        } else {
            req.payload.clone()
        };
        EchoReply {
            payload,
            backend: self.name.clone(),
            seq,
            ..Default::default()
        }
    }
}

async fn delay(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let guard = CallGuard::new(&self.observed, &req);
        let meta = req.metadata().clone();
        let body = req.into_inner();
        delay(body.delay_ms).await;
        guard.finish();
        if let Some(status) = failure(&body) {
            return Err(status);
        }
        let sick = self.observed.failing.load(Ordering::SeqCst);
        if sick != 0 {
            return Err(Status::new(
                tonic::Code::from_i32(sick),
                "this backend is failing",
            ));
        }
        let mut resp = Response::new(self.reply(&body, 0));
        echo_metadata(&meta, resp.metadata_mut());
        Ok(resp)
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let guard = CallGuard::new(&self.observed, &req);
        let meta = req.metadata().clone();
        let mut stream = req.into_inner();
        let (mut messages, mut bytes) = (0u64, 0u64);
        let mut last = EchoRequest::default();
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            messages += 1;
            bytes += msg.payload.len() as u64;
            let early = msg.end_early;
            last = msg;
            if early {
                break;
            }
        }
        guard.finish();
        if let Some(status) = failure(&last) {
            return Err(status);
        }
        let mut reply = self.reply(&last, 0);
        reply.payload.clear();
        reply.messages_received = messages;
        reply.bytes_received = bytes;
        let mut resp = Response::new(reply);
        echo_metadata(&meta, resp.metadata_mut());
        Ok(resp)
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let guard = CallGuard::new(&self.observed, &req);
        let meta = req.metadata().clone();
        let body = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            for seq in 0..body.reply_count {
                delay(body.delay_ms).await;
                if tx.send(Ok(this.reply(&body, seq))).await.is_err() {
                    return; // client gone: the guard counts the cancellation
                }
            }
            if let Some(status) = failure(&body) {
                let _ = tx.send(Err(status)).await;
            }
            guard.finish();
        });
        let mut resp = Response::new(Box::pin(ReceiverStream::new(rx)) as ReplyStream);
        echo_metadata(&meta, resp.metadata_mut());
        Ok(resp)
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let guard = CallGuard::new(&self.observed, &req);
        let meta = req.metadata().clone();
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            loop {
                let msg = tokio::select! {
                    msg = stream.next() => msg,
                    _ = tx.closed() => return,
                };
                let Some(msg) = msg else { break };
                let msg = match msg {
                    Ok(m) => m,
                    Err(_) => return,
                };
                delay(msg.delay_ms).await;
                if msg.end_early || msg.fail_code != 0 {
                    let end = failure(&msg).unwrap_or_else(|| Status::ok(""));
                    if msg.end_early && msg.fail_code == 0 {
                        // A clean early end: one reply, then OK trailers.
                        let _ = tx.send(Ok(this.reply(&msg, seq))).await;
                        guard.finish();
                        return;
                    }
                    let _ = tx.send(Err(end)).await;
                    guard.finish();
                    return;
                }
                if tx.send(Ok(this.reply(&msg, seq))).await.is_err() {
                    return;
                }
                seq += 1;
            }
            guard.finish();
        });
        let mut resp = Response::new(Box::pin(ReceiverStream::new(rx)) as ReplyStream);
        echo_metadata(&meta, resp.metadata_mut());
        Ok(resp)
    }
}
