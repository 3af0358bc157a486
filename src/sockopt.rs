//! Socket options shared by client connections and upstream connections.

use std::time::Duration;

use tokio::net::TcpStream;

/// Idle time before the first TCP keepalive probe.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered TCP keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel gives the connection up.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;
/// Longest time sent data (or a keepalive probe) may stay unacknowledged before the kernel
/// closes the connection (`TCP_USER_TIMEOUT`, RFC 5482; Linux only).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns on TCP keepalive and `TCP_USER_TIMEOUT` on `tcp`, so that a peer whose host or network
/// went away is found within about a minute whether or not the connection carries calls —
/// without a single HTTP/2 frame, which no gRPC peer's PING policy can object to (gRPC's own
/// transports do the same: grpc-go sets `TCP_USER_TIMEOUT`, linkerd2-proxy uses both). A peer
/// whose host still answers but whose process hangs is found by HTTP/2 keepalive instead
/// (`keepalive_time`). Failures to set an option are ignored: they only lose the early warning.
pub fn tcp_keepalive(tcp: &TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    let params = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_PROBES);
    let _ = sock.set_tcp_keepalive(&params);
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
}
