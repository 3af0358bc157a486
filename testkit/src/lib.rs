//! Real gRPC backends and clients for synapsor's tests, examples and benchmarks.
//!
//! [`Backend`] is a tonic server of the `synapsor.test.v1.Echo` service bound to `127.0.0.1`. Every
//! request field steers what it does (reply count and size, delays, failure status, ending a call
//! before the client half-closes), and [`Observed`] records what it saw (calls, cancellations,
//! metadata, `grpc-timeout`) so a test can assert on the upstream's view of a call.
//!
//! [`AuthzServer`] serves `synapsor.test.v1.Authz` (a fixed authorization policy steered by the
//! caller's bearer token) and `synapsor.test.v1.Tokens` (short-lived credentials) for the
//! gateway's callout tests; see [`authz`].

pub mod authz;
pub mod backend;

/// Generated tonic code for `proto/echo.proto` and `proto/authz.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("synapsor.test.v1");
}

pub use authz::{AuthzOptions, AuthzServer};
pub use backend::{Backend, BackendOptions, Observed};
pub use pb::echo_client::EchoClient;
pub use pb::{EchoReply, EchoRequest};

/// Connects a tonic client to `addr` (`host:port`) over h2c.
pub async fn client(addr: std::net::SocketAddr) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect");
    EchoClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// A tonic channel to `addr` that connects lazily (for clients that must not fail at start).
pub fn lazy_client(addr: std::net::SocketAddr) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_lazy();
    EchoClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}
