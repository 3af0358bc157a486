//! Every way the gateway itself can end a call, and the one place each becomes a gRPC status.

use std::time::Duration;

use crate::grpc::Code;

/// Errors cross service boundaries boxed, as in tower and linkerd (re-exported by `stack`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the gateway ended a call (as opposed to the upstream's own status, which passes through).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route and no default upstream matched.
    #[error("no route for {0}")]
    NoRoute(String),
    /// Every endpoint of the group is out of rotation; `why` says why each one is.
    #[error("upstream {upstream}: no healthy endpoint ({why})")]
    NoHealthyEndpoint {
        /// Upstream group name.
        upstream: String,
        /// Each endpoint's reason, `; `-separated.
        why: String,
    },
    /// TCP connect or HTTP/2 handshake failed or timed out.
    #[error("upstream {upstream}: connecting to {endpoint} failed: {reason}")]
    Connect {
        /// Upstream group name.
        upstream: String,
        /// Endpoint address.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The stream never started: REFUSED_STREAM, or GOAWAY before it was processed.
    #[error("upstream {upstream}: {endpoint} did not accept the stream: {reason}")]
    NotStarted {
        /// Upstream group name.
        upstream: String,
        /// Endpoint address.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A strict pool's queue was full or the wait timed out.
    #[error("upstream {upstream}: {endpoint} has no free stream ({reason})")]
    PoolExhausted {
        /// Upstream group name.
        upstream: String,
        /// Endpoint address.
        endpoint: String,
        /// `queue full` or `waited …`.
        reason: String,
    },
    /// The client's deadline (`grpc-timeout`) passed.
    #[error("deadline exceeded after {0:?}")]
    Deadline(Duration),
    /// The upstream sent no response headers within `request_timeout`.
    #[error("upstream {upstream} sent no response headers within {timeout:?} (request_timeout)")]
    RequestTimeout {
        /// Upstream group name.
        upstream: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The upstream reset the stream after it started.
    #[error("upstream {upstream} reset the stream: {reason}")]
    UpstreamReset {
        /// Upstream group name.
        upstream: String,
        /// The RST_STREAM error code.
        reason: h2::Reason,
    },
    /// The upstream connection failed after the stream started.
    #[error("upstream {upstream}: connection lost: {reason}")]
    UpstreamLost {
        /// Upstream group name.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
}

impl ProxyError {
    /// The gRPC status this error is answered with (docs/ARCHITECTURE.md's table).
    pub fn code(&self) -> Code {
        match self {
            ProxyError::NoRoute(_) => Code::Unimplemented,
            ProxyError::NoHealthyEndpoint { .. }
            | ProxyError::Connect { .. }
            | ProxyError::NotStarted { .. }
            | ProxyError::UpstreamLost { .. } => Code::Unavailable,
            ProxyError::PoolExhausted { .. } => Code::ResourceExhausted,
            ProxyError::Deadline(_) | ProxyError::RequestTimeout { .. } => Code::DeadlineExceeded,
            ProxyError::UpstreamReset { reason, .. } => reset_code(*reason),
        }
    }

    /// True when the call never reached an upstream, so it may be retried elsewhere.
    pub fn never_started(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::NotStarted { .. }
                | ProxyError::NoHealthyEndpoint { .. }
        )
    }
}

/// How gRPC clients map an HTTP/2 RST_STREAM code to a status (gRPC's PROTOCOL-HTTP2 spec).
pub fn reset_code(reason: h2::Reason) -> Code {
    match reason {
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    }
}
