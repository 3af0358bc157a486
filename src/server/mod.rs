//! gRPC listeners: accept TCP connections (bounded), speak HTTP/2 with prior knowledge, spawn one
//! task per stream, and drain gracefully (GOAWAY, let streams finish) on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::batch_io::Batched;
use crate::config::ListenerConfig;
use crate::proxy;
use crate::proxy::Stack;
use crate::stack::Inbound;
use crate::tls::{Io, ServerTls};
use crate::upstream::pool::{CONN_WINDOW, MAX_FRAME, STREAM_WINDOW};

pub mod worker;

/// Binds a listener socket (SO_REUSEADDR, a deep backlog, non-blocking). It is a std socket so
/// that whichever runtime accepts on it can register it.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Limits and HTTP/2 settings of one listener.
#[derive(Clone, Debug)]
pub struct ListenerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
    /// Time allowed for the client preface.
    pub handshake_timeout: Duration,
    /// PING interval towards clients (`None`: off) and the time allowed for the answer.
    pub keepalive: Option<(Duration, Duration)>,
    /// Connection age before GOAWAY (`None`: never), and the grace after it.
    pub max_age: Option<(Duration, Duration)>,
    /// TLS (`None`: h2c).
    pub tls: Option<Arc<ServerTls>>,
}

impl ListenerSettings {
    /// From the YAML, with the listener's TLS already loaded.
    pub fn from_config(c: &ListenerConfig, tls: Option<Arc<ServerTls>>) -> ListenerSettings {
        ListenerSettings {
            max_concurrent_streams: c.max_concurrent_streams,
            max_header_list_size: c.max_header_list_size,
            handshake_timeout: c.handshake_timeout.0,
            keepalive: c
                .keepalive_time
                .nonzero()
                .map(|t| (t, c.keepalive_timeout.0)),
            max_age: c
                .max_connection_age
                .nonzero()
                .map(|a| (a, c.max_connection_age_grace.0)),
            tls,
        }
    }
}

/// What one worker serves a listener's connections with: the stack (stages, routes, upstreams)
/// and the limits. A reload swaps it: each new stream takes the stack in force when it starts;
/// HTTP/2 settings apply to connections accepted after the swap.
pub struct ListenerSlot {
    /// The listener's name.
    pub name: Arc<str>,
    serving: ArcSwap<Serving>,
}

/// A listener's stack and settings, as of one reload.
pub struct Serving {
    /// Stages around the forwarder.
    pub stack: Stack,
    /// Limits and HTTP/2 settings.
    pub settings: Arc<ListenerSettings>,
}

impl ListenerSlot {
    /// A slot serving `serving`.
    pub fn new(name: &str, serving: Serving) -> Arc<ListenerSlot> {
        Arc::new(ListenerSlot {
            name: name.into(),
            serving: ArcSwap::from_pointee(serving),
        })
    }

    /// What new streams get now.
    pub fn current(&self) -> Arc<Serving> {
        self.serving.load_full()
    }

    /// The stack a new stream runs through (per stream: no reference count is taken on the
    /// slot's contents, only the stack is cloned).
    pub fn stack(&self) -> Stack {
        self.serving.load().stack.clone()
    }

    /// Swaps in a new stack and settings.
    pub fn set(&self, serving: Serving) {
        self.serving.store(Arc::new(serving));
    }
}

/// A running listener's connection budget; all permits back means every connection has closed.
pub struct Connections {
    sem: Arc<Semaphore>,
    max: usize,
}

impl Connections {
    /// A budget of `max` connections.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            sem: Arc::new(Semaphore::new(max)),
            max,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.sem.available_permits()
    }

    /// Waits until every connection has closed.
    pub async fn closed(&self) {
        let _ = self.sem.acquire_many(self.max as u32).await;
    }
}

/// An accepted connection on its way to a worker.
pub struct Incoming {
    /// What the worker serves it with.
    pub slot: Arc<ListenerSlot>,
    /// Turns true when the listener stops (shutdown, or a reload removed it): GOAWAY.
    pub stop: watch::Receiver<bool>,
    /// The socket, detached from the acceptor's runtime.
    pub tcp: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Its place in the listener's connection budget, released when it closes.
    pub permit: OwnedSemaphorePermit,
}

/// Accepts connections until `shutdown` turns true and deals them round robin to the workers
/// (`slots[i]` is what worker `i` serves them with), which serve them on their own runtimes;
/// `goaway` turning true makes each connection send GOAWAY and end when its streams have.
pub async fn accept_loop(
    listener: Arc<TcpListener>,
    slots: Vec<Arc<ListenerSlot>>,
    workers: Vec<mpsc::Sender<Incoming>>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
    goaway: watch::Receiver<bool>,
) {
    let name = slots[0].name.clone();
    if workers.is_empty() {
        return;
    }
    let mut next = 0;
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let permit = tokio::select! {
            p = conns.sem.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(tcp) = tcp.into_std() else { continue };
        let incoming = Incoming {
            slot: slots[next].clone(),
            stop: goaway.clone(),
            tcp,
            peer,
            permit,
        };
        if workers[next].send(incoming).await.is_err() {
            break;
        }
        next = (next + 1) % workers.len();
    }
    tracing::debug!(listener = %name, "stopped accepting");
}

/// A connection on which the client reset at least this many streams within a second of opening
/// them, and at least half of all its streams, is closed with GOAWAY ENHANCE_YOUR_CALM (Envoy's
/// premature-reset rule).
pub const RESET_FLOOD_MIN: u64 = 500;

/// A client's HTTP/2 connection, as the listener serves it.
type ClientConn = h2::server::Connection<Batched<Io>, Bytes>;

/// Serves one client connection on the current (worker) runtime.
pub async fn serve_conn(incoming: Incoming) {
    let Incoming {
        tcp,
        peer,
        permit,
        slot,
        stop: shutdown,
    } = incoming;
    let settings = slot.current().settings.clone();
    let _permit = permit;
    let Ok(tcp) = TcpStream::from_std(tcp) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    crate::sockopt::tcp_keepalive(&tcp);
    let Some((io, tls)) = accept_tls(tcp, peer, &settings).await else {
        return;
    };
    let inbound = Arc::new(Inbound {
        listener: slot.name.clone(),
        ..tls
    });
    let Some(conn) = accept_h2(io, peer, &settings).await else {
        return;
    };
    serve_streams(conn, &slot, peer, inbound, &settings, shutdown).await;
}

/// The client's transport: the TCP stream as it is (h2c), or the TLS session over it once the
/// handshake is done within `handshake_timeout`, with the server name the client asked for and
/// the identity of its certificate (the listener's name is filled in by the caller).
/// `None` (logged) when the handshake fails, times out, or does not agree on ALPN `h2`.
async fn accept_tls(
    tcp: TcpStream,
    peer: SocketAddr,
    settings: &ListenerSettings,
) -> Option<(Io, Inbound)> {
    let Some(tls) = &settings.tls else {
        return Some((Io::Plain(tcp), Inbound::default()));
    };
    let accept = tls.acceptor().accept(tcp);
    match tokio::time::timeout(settings.handshake_timeout, accept).await {
        Ok(Ok(s)) => {
            let (_, session) = s.get_ref();
            if session.alpn_protocol() != Some(b"h2") {
                tracing::debug!(%peer, "TLS client did not offer ALPN h2; closing");
                return None;
            }
            let client_identity = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::identity)
                .map(Arc::from);
            let server_name = session.server_name().map(Arc::from);
            let inbound = Inbound {
                listener: Arc::from(""),
                server_name,
                client_identity,
            };
            Some((Io::Server(Box::new(s)), inbound))
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake in time; closing");
            None
        }
    }
}

/// The HTTP/2 server connection over `io` with the listener's settings, once the client's
/// preface has come within `handshake_timeout`; `None` (logged) when it fails or is late.
async fn accept_h2(io: Io, peer: SocketAddr, settings: &ListenerSettings) -> Option<ClientConn> {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .header_list_too_large_response(
            http::StatusCode::OK,
            crate::grpc::metadata_too_large(settings.max_header_list_size),
            h2::Reason::NO_ERROR,
        )
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME);
    match tokio::time::timeout(
        settings.handshake_timeout,
        builder.handshake(Batched::new(io)),
    )
    .await
    {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no HTTP/2 preface in time; closing");
            None
        }
    }
}

/// Serves the client's streams, each on a task of its own, until the connection ends: GOAWAY
/// when `shutdown` turns true, at the connection's age or on a reset flood; closed at once when
/// a keepalive PING goes unanswered or an aged-out connection outlives its grace.
async fn serve_streams(
    mut conn: ClientConn,
    slot: &ListenerSlot,
    peer: SocketAddr,
    inbound: Arc<Inbound>,
    settings: &ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut draining = *shutdown.borrow();
    if draining {
        conn.graceful_shutdown();
    }
    let pings = conn.ping_pong().expect("first ping_pong");
    let keepalive = client_keepalive(pings, settings.keepalive);
    // Aging out: GOAWAY at the (jittered) age, then close after the grace.
    let age = tokio::time::sleep(jittered_age(settings.max_age));
    tokio::pin!(keepalive, age);
    let mut aged = false;
    let resets = Arc::new(AtomicU64::new(0));
    let early_resets = crate::stack::ClientEarlyResets::default();
    let (mut streams, mut calmed) = (0u64, false);
    loop {
        tokio::select! {
            r = conn.accept() => match r {
                Some(Ok((req, respond))) => {
                    streams += 1;
                    if !calmed && reset_flood(peer, streams, &resets) {
                        conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                        calmed = true;
                        draining = true;
                        continue;
                    }
                    spawn_stream(slot, peer, &inbound, &early_resets, &resets, req, respond);
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "client connection error");
                    break;
                }
                None => break,
            },
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
            why = &mut keepalive => {
                tracing::debug!(%peer, "closing client connection: {why}");
                break;
            }
            () = &mut age, if settings.max_age.is_some() => {
                if aged {
                    tracing::debug!(%peer, "aged-out connection still busy after its grace; closing");
                    break;
                }
                aged = true;
                age_out(&mut conn, peer, &mut draining);
                let grace = settings.max_age.map_or(Duration::ZERO, |(_, g)| g);
                age.as_mut().reset(tokio::time::Instant::now() + grace);
            }
        }
    }
}

/// True when the client has reset at least [`RESET_FLOOD_MIN`] of the `streams` it opened on
/// this connection early (`resets`, counted by the streams' tasks), and at least half of them:
/// then (logged) the connection is to be closed with GOAWAY ENHANCE_YOUR_CALM.
fn reset_flood(peer: SocketAddr, streams: u64, resets: &AtomicU64) -> bool {
    let early = resets.load(Ordering::Relaxed);
    if early >= RESET_FLOOD_MIN && early * 2 >= streams {
        // The 2023 "rapid reset" pattern: most streams are opened and
        // cancelled at once. Each still costs an upstream stream; stop it.
        tracing::warn!(%peer, streams, resets = early,
            "client resets most streams at once; GOAWAY ENHANCE_YOUR_CALM");
        return true;
    }
    false
}

/// Serves one stream of the client at `peer` (with its connection's `inbound` facts and its
/// connection's `early_resets`) through the slot's current stack, on a task of its own; a stream
/// the client reset early adds one to `resets`.
fn spawn_stream(
    slot: &ListenerSlot,
    peer: SocketAddr,
    inbound: &Arc<Inbound>,
    early_resets: &crate::stack::ClientEarlyResets,
    resets: &Arc<AtomicU64>,
    req: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) {
    let (svc, name) = (slot.stack(), slot.name.clone());
    let resets = resets.clone();
    let client = proxy::Client {
        peer,
        inbound: inbound.clone(),
        early: early_resets.clone(),
    };
    tokio::spawn(async move {
        if proxy::serve_stream(svc, &name, client, req, respond).await {
            resets.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// A connection reached its `max_connection_age`: GOAWAY, unless it is draining already.
fn age_out(conn: &mut ClientConn, peer: SocketAddr, draining: &mut bool) {
    if !*draining {
        *draining = true;
        tracing::debug!(%peer, "connection reached max_connection_age; GOAWAY");
        conn.graceful_shutdown();
    }
}

/// When a connection ages out: `max_age` ±10%, so connections opened together do not all
/// reconnect at once; far in the future when aging is off.
fn jittered_age(max_age: Option<(Duration, Duration)>) -> Duration {
    match max_age {
        Some((age, _)) => age.mul_f64(0.9 + 0.2 * rand::random::<f64>()),
        None => Duration::from_secs(365 * 24 * 3600),
    }
}

/// PINGs the client every interval; returns when one goes unanswered (a dead or stuck peer).
async fn client_keepalive(
    mut ping: h2::PingPong,
    keepalive: Option<(Duration, Duration)>,
) -> String {
    let Some((interval, timeout)) = keepalive else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("PING failed: {e}"),
            Err(_) => return format!("PING not answered within {timeout:?}"),
        }
    }
}
