//! The authorization and token services of `proto/authz.proto`: a real tonic server on
//! 127.0.0.1 for the gateway's callout tests and the `ext-authz` and `token-cache` examples.
//!
//! `synapsor.test.v1.Authz/Check` decides by the credential `authorization: Bearer <token>`,
//! read from the CheckRequest's `headers` (the metadata a plugin forwards, as Envoy's
//! `ext_authz` does) or, when they hold no `authorization` entry, from the Check call's own
//! metadata:
//!
//! | token                     | answer                                                      |
//! |---------------------------|-------------------------------------------------------------|
//! | missing, or not `Bearer`  | UNAUTHENTICATED `no credentials`                            |
//! | starts with `allow`       | OK, `CheckResponse.headers` = [`x-authz-user: <token>`]     |
//! | starts with `deny`        | PERMISSION_DENIED `token <token> may not call <method>`     |
//! | starts with `slow`        | after 2 s (see [`AuthzOptions::slow_delay`]), as `allow`    |
//! | anything else             | PERMISSION_DENIED `unknown token <token>`                   |
//!
//! `<method>` is the CheckRequest's `method`. `synapsor.test.v1.Tokens/Issue` answers
//! `tok-<n>` (`n` = 1, 2, … over the server's life) with `expires_in_ms` set to the token
//! lifetime ([`AuthzOptions::token_lifetime`], changed at run time with
//! [`AuthzServer::set_token_lifetime`]).
//!
//! ```no_run
//! # async fn demo() {
//! use synapsor_testkit::authz::{AuthzOptions, AuthzServer};
//! let server = AuthzServer::start(AuthzOptions::default());
//! let mut client = synapsor_testkit::authz::authz_client(server.addr()).await;
//! // ... call client.check(..), then assert on server.checks()
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::pb::authz_client::AuthzClient;
use crate::pb::authz_server::{Authz, AuthzServer as AuthzService};
use crate::pb::tokens_client::TokensClient;
use crate::pb::tokens_server::{Tokens, TokensServer};
use crate::pb::{CheckRequest, CheckResponse, Header, IssueRequest, IssueResponse};

/// How to start an [`AuthzServer`].
#[derive(Clone, Debug)]
pub struct AuthzOptions {
    /// Address to bind; `127.0.0.1:0` when `None`.
    pub addr: Option<SocketAddr>,
    /// How long issued tokens are valid (`expires_in_ms`); 60 s by default.
    pub token_lifetime: Duration,
    /// How long a `slow…` token's check waits before it answers; 2 s by default.
    pub slow_delay: Duration,
}

impl Default for AuthzOptions {
    fn default() -> AuthzOptions {
        AuthzOptions {
            addr: None,
            token_lifetime: Duration::from_secs(60),
            slow_delay: Duration::from_secs(2),
        }
    }
}

/// What the server has done, shared between its handlers and the [`AuthzServer`] handle.
#[derive(Default)]
struct Shared {
    checks: AtomicU64,
    issues: AtomicU64,
    lifetime_ms: AtomicU64,
    slow_ms: u64,
    last_check: Mutex<Option<CheckRequest>>,
    last_timeout: Mutex<Option<String>>,
    last_audience: Mutex<Option<String>>,
}

/// A running authorization and token server. Dropping it stops it.
pub struct AuthzServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl AuthzServer {
    /// Binds (to `127.0.0.1:0` unless `opts.addr` says otherwise) and serves `Authz`, `Tokens`
    /// and `grpc.health.v1.Health` (SERVING) on a thread and runtime of its own, so it may be
    /// started from sync code or any runtime.
    pub fn start(opts: AuthzOptions) -> AuthzServer {
        let addr = opts.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let listener = std::net::TcpListener::bind(addr).expect("bind authz server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            lifetime_ms: AtomicU64::new(millis(opts.token_lifetime)),
            slow_ms: millis(opts.slow_delay),
            ..Shared::default()
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let svc = Handlers(shared.clone());
        std::thread::Builder::new()
            .name(format!("authz-{}", addr.port()))
            .spawn(move || serve(listener, svc, stop_rx, done_tx))
            .expect("spawn authz thread");
        AuthzServer {
            addr,
            shared,
            stop: Some(stop_tx),
            done: Some(done_rx),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `Check` calls answered so far (allowed or not; a `slow` one once it answers).
    pub fn checks(&self) -> u64 {
        self.shared.checks.load(Ordering::SeqCst)
    }

    /// Tokens issued so far.
    pub fn issues(&self) -> u64 {
        self.shared.issues.load(Ordering::SeqCst)
    }

    /// The most recent `CheckRequest` received (counted or not yet answered).
    pub fn last_check(&self) -> Option<CheckRequest> {
        self.shared.last_check.lock().unwrap().clone()
    }

    /// The `grpc-timeout` the most recent `Check` call carried, as sent (`250000u`, say).
    pub fn last_timeout(&self) -> Option<String> {
        self.shared.last_timeout.lock().unwrap().clone()
    }

    /// The audience of the most recent `IssueRequest`.
    pub fn last_audience(&self) -> Option<String> {
        self.shared.last_audience.lock().unwrap().clone()
    }

    /// Makes tokens issued from now on valid for `lifetime`.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared
            .lifetime_ms
            .store(millis(lifetime), Ordering::SeqCst);
    }

    /// Stops the server (its listener and every connection close) and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for AuthzServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The server's thread: one current-thread runtime until `stop` fires (or its sender drops).
fn serve(
    listener: std::net::TcpListener,
    svc: Handlers,
    stop: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("authz runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let (_health, health_svc) = tonic_health::server::health_reporter();
        let server = tonic::transport::Server::builder()
            .add_service(health_svc)
            .add_service(AuthzService::new(svc.clone()))
            .add_service(TokensServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::select! {
            _ = server => {}
            _ = stop => {}
        }
    });
    rt.shutdown_background();
    let _ = done.send(());
}

#[derive(Clone)]
struct Handlers(Arc<Shared>);

/// The `authorization` value the policy reads: the CheckRequest's `headers` entry, else the
/// Check call's own metadata entry.
fn credential(req: &Request<CheckRequest>) -> Option<String> {
    let forwarded = req.get_ref().headers.iter();
    let mut named = forwarded.filter(|h| h.name.eq_ignore_ascii_case("authorization"));
    match named.next() {
        Some(h) => Some(h.value.clone()),
        None => Some(
            req.metadata()
                .get("authorization")?
                .to_str()
                .ok()?
                .to_string(),
        ),
    }
}

/// The token of an `authorization` value `Bearer <token>` (the scheme in any case).
fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// The policy of the module documentation, once any `slow` wait is over.
fn decide(token: Option<&str>, method: &str) -> Result<CheckResponse, Status> {
    let Some(token) = token else {
        return Err(Status::unauthenticated("no credentials"));
    };
    if token.starts_with("allow") || token.starts_with("slow") {
        return Ok(CheckResponse {
            headers: vec![Header {
                name: "x-authz-user".into(),
                value: token.into(),
            }],
        });
    }
    if token.starts_with("deny") {
        let msg = format!("token {token} may not call {method}");
        return Err(Status::permission_denied(msg));
    }
    Err(Status::permission_denied(format!("unknown token {token}")))
}

#[tonic::async_trait]
impl Authz for Handlers {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let token = credential(&req).as_deref().and_then(bearer);
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        *self.0.last_timeout.lock().unwrap() = timeout;
        let body = req.into_inner();
        *self.0.last_check.lock().unwrap() = Some(body.clone());
        if token.as_deref().is_some_and(|t| t.starts_with("slow")) {
            tokio::time::sleep(Duration::from_millis(self.0.slow_ms)).await;
        }
        self.0.checks.fetch_add(1, Ordering::SeqCst);
        decide(token.as_deref(), &body.method).map(Response::new)
    }
}

#[tonic::async_trait]
impl Tokens for Handlers {
    async fn issue(&self, req: Request<IssueRequest>) -> Result<Response<IssueResponse>, Status> {
        *self.0.last_audience.lock().unwrap() = Some(req.into_inner().audience);
        let n = self.0.issues.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(IssueResponse {
            token: format!("tok-{n}"),
            expires_in_ms: self.0.lifetime_ms.load(Ordering::SeqCst),
        }))
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect")
}

/// Connects an `Authz` client to `addr` over h2c.
pub async fn authz_client(addr: SocketAddr) -> AuthzClient<Channel> {
    AuthzClient::new(channel(addr).await)
}

/// Connects a `Tokens` client to `addr` over h2c.
pub async fn tokens_client(addr: SocketAddr) -> TokensClient<Channel> {
    TokensClient::new(channel(addr).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let ok = decide(Some("allow-ada"), "/a.B/C").unwrap();
        assert_eq!(ok.headers[0].name, "x-authz-user");
        assert_eq!(ok.headers[0].value, "allow-ada");
        assert!(decide(Some("slow-1"), "/a.B/C").is_ok());
        let no = decide(Some("deny-bob"), "/a.B/C").unwrap_err();
        assert_eq!(no.code(), tonic::Code::PermissionDenied);
        assert_eq!(no.message(), "token deny-bob may not call /a.B/C");
        let none = decide(None, "/a.B/C").unwrap_err();
        assert_eq!(
            (none.code(), none.message()),
            (tonic::Code::Unauthenticated, "no credentials")
        );
        let odd = decide(Some("who"), "/a.B/C").unwrap_err();
        assert_eq!(odd.message(), "unknown token who");
        assert_eq!(bearer("bearer  allow-1 ").as_deref(), Some("allow-1"));
        assert_eq!(bearer("Basic YWxhZGRpbg=="), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
