//! What a call carries besides its headers and body: the request and response extensions the
//! server, the forwarder and the stages put there for each other, and [`Rejected`], the error a
//! stage refuses a call with. They live here, at the bottom of the request path, so that every
//! layer above can name them without importing another (docs/ARCHITECTURE.md).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::grpc::Code;

/// The authenticated caller, put in the request's extensions by an auth stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// Where an auth stage also writes the principal, for an outer stage (the access log) that saw
/// the request before authentication.
#[derive(Clone, Debug, Default)]
pub struct PrincipalSlot(pub Arc<std::sync::OnceLock<String>>);

/// The listener a call came in on and what its client's TLS handshake said: one per client
/// connection, shared by its streams, put in every request's extensions by the server.
#[derive(Clone, Debug, Default)]
pub struct Inbound {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The server name (SNI) the client asked for, on a TLS listener.
    pub server_name: Option<Arc<str>>,
    /// The identity in the client's certificate, on a listener that verifies them (see
    /// `tls::identity`).
    pub client_identity: Option<Arc<str>>,
}

/// The client's address, put in every request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// When the server received a call that carries a deadline (`grpc-timeout`), put in its
/// extensions by the server: the forwarder counts the deadline from here (gRPC's deadline is
/// the client's, whatever the stages spent of it).
#[derive(Clone, Copy, Debug)]
pub struct Received(pub std::time::Instant);

/// A call a stage refused: the status it gets and any extra trailers.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    /// The gRPC status code.
    pub code: Code,
    /// The `grpc-message`.
    pub message: String,
    /// When set, the `grpc-retry-pushback-ms` trailer: how long the client should wait.
    pub retry_pushback_ms: Option<u64>,
    /// The kind of stage that refused the call (set by the stage's service).
    pub stage: &'static str,
    /// The plugin that refused it, for a `wasm` stage.
    pub plugin: Option<Arc<str>>,
    /// More trailers to send with the status (a plugin's rejection may carry some).
    pub extra: Option<Box<HeaderMap>>,
}

impl Rejected {
    /// A rejection with `code` and `message` and no extra trailers.
    pub fn new(code: Code, message: impl Into<String>) -> Rejected {
        Rejected {
            code,
            message: message.into(),
            retry_pushback_ms: None,
            stage: "",
            plugin: None,
            extra: None,
        }
    }

    /// RESOURCE_EXHAUSTED asking the client to wait `pushback_ms` before retrying.
    pub fn exhausted(message: String, pushback_ms: Option<u64>) -> Rejected {
        Rejected {
            retry_pushback_ms: pushback_ms,
            ..Rejected::new(Code::ResourceExhausted, message)
        }
    }

    /// The same rejection, attributed to `stage`.
    pub fn by(self, stage: &'static str) -> Rejected {
        Rejected { stage, ..self }
    }

    /// The same rejection, attributed to the plugin `name` of a `wasm` stage.
    pub fn by_plugin(self, name: &Arc<str>) -> Rejected {
        Rejected {
            stage: "wasm",
            plugin: Some(name.clone()),
            ..self
        }
    }

    /// Who refused the call, as logs name it: `rate_limit`, or `wasm:NAME` for a plugin.
    pub fn origin(&self) -> String {
        match &self.plugin {
            Some(p) => format!("{}:{p}", self.stage),
            None => self.stage.to_string(),
        }
    }

    /// The extra trailers of this rejection.
    pub fn trailers(&self) -> HeaderMap {
        let mut t = self.extra.as_deref().cloned().unwrap_or_default();
        if let Some(ms) = self.retry_pushback_ms {
            t.insert(
                HeaderName::from_static("grpc-retry-pushback-ms"),
                HeaderValue::from(ms),
            );
        }
        t
    }
}

/// In a request's extensions: the client connection's calls that ended before the upstream
/// answered them, per second — how the request path tells one client's reset flood from
/// ordinary cancels.
#[derive(Clone, Debug, Default)]
pub struct ClientEarlyResets(pub std::sync::Arc<crate::clock::PerSecond>);

/// The upstream endpoint that served a call, put in the response's extensions by the forwarder.
#[derive(Clone, Debug)]
pub struct UpstreamEndpoint(pub Arc<str>);

/// The upstream group that served a call, put in the response's extensions by the forwarder.
#[derive(Clone, Debug)]
pub struct UpstreamGroup(pub Arc<str>);
