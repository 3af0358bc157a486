//! A raw HTTP/2 client for tests that must send what no HTTP/2 library will: frames written by
//! hand (RFC 9113 §4.1) and header blocks encoded by hand with HPACK literals (RFC 7541 §6.2),
//! so a test can put an upper-case name, an unknown pseudo-header or a split block on the wire.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
/// HEADERS.
pub const HEADERS: u8 = 0x1;
/// RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// PING.
pub const PING: u8 = 0x6;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// CONTINUATION.
pub const CONTINUATION: u8 = 0x9;
/// END_STREAM flag.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS flag.
pub const END_HEADERS: u8 = 0x4;

/// One frame as read: type, flags, stream id, payload.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's other bits from `first`.
pub fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u8, mut v: usize) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A header block under construction.
#[derive(Default, Clone)]
pub struct Block(pub Vec<u8>);

impl Block {
    /// A literal field with a literal name, without indexing (`0x00`), bytes as given.
    pub fn lit(mut self, name: &[u8], value: &[u8]) -> Block {
        self.literal(0x00, name, value);
        self
    }

    /// A literal field with a literal name, added to the dynamic table (`0x40`).
    pub fn lit_indexed(mut self, name: &[u8], value: &[u8]) -> Block {
        self.literal(0x40, name, value);
        self
    }

    /// This block followed by `other`.
    pub fn concat(mut self, other: Block) -> Block {
        self.0.extend_from_slice(&other.0);
        self
    }

    /// An indexed field (`0x80 | index`): 1–61 static, 62 on the dynamic table.
    pub fn indexed(mut self, index: usize) -> Block {
        hpack_int(&mut self.0, 0x80, 7, index);
        self
    }

    fn literal(&mut self, kind: u8, name: &[u8], value: &[u8]) {
        self.0.push(kind);
        hpack_int(&mut self.0, 0, 7, name.len());
        self.0.extend_from_slice(name);
        hpack_int(&mut self.0, 0, 7, value.len());
        self.0.extend_from_slice(value);
    }

    /// `:method POST`, `:scheme http`, `:path`, `:authority`, `content-type:
    /// application/grpc`, `te: trailers`: a gRPC request's head.
    pub fn grpc_request(path: &str) -> Block {
        Block::default()
            .indexed(3) // :method POST
            .indexed(6) // :scheme http
            .lit(b":path", path.as_bytes())
            .lit(b":authority", b"localhost")
            .lit(b"content-type", b"application/grpc")
            .lit(b"te", b"trailers")
    }
}

/// A gRPC message frame: the 5-byte prefix (uncompressed) and `msg`.
pub fn grpc_message(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// A raw client connection that has sent the preface and an empty SETTINGS.
pub struct RawH2 {
    tcp: TcpStream,
}

impl RawH2 {
    /// Connects and sends the client preface and SETTINGS.
    pub async fn connect(addr: SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut c = RawH2 { tcp };
        c.frame(SETTINGS, 0, 0, &[]).await;
        c
    }

    /// Writes one frame. A write to a connection the peer closed is dropped: what the peer did
    /// shows in what [`RawH2::next`] reads.
    pub async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = Vec::with_capacity(9 + payload.len());
        let n = payload.len();
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags]);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        let _ = self.tcp.write_all(&out).await;
    }

    /// HEADERS with END_HEADERS (and END_STREAM when `end`).
    pub async fn headers(&mut self, stream: u32, block: &Block, end: bool) {
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.frame(HEADERS, flags, stream, &block.0).await;
    }

    /// A whole gRPC request: `block`, then one message with END_STREAM.
    pub async fn request(&mut self, stream: u32, block: &Block, msg: &[u8]) {
        self.headers(stream, block, false).await;
        self.frame(DATA, END_STREAM, stream, &grpc_message(msg))
            .await;
    }

    /// Reads the next frame that is not connection housekeeping (SETTINGS, WINDOW_UPDATE,
    /// PING ACKs are answered or skipped); `None` on EOF or after `wait` without one.
    pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let f = tokio::time::timeout(wait, self.read_frame()).await.ok()??;
            match f.kind {
                SETTINGS if f.flags & 1 == 0 => self.frame(SETTINGS, 1, 0, &[]).await,
                SETTINGS | 0x8 => {}
                PING if f.flags & 1 == 0 => {
                    let p = f.payload.clone();
                    self.frame(PING, 1, 0, &p).await;
                }
                PING => {}
                _ => return Some(f),
            }
        }
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut h = [0u8; 9];
        self.tcp.read_exact(&mut h).await.ok()?;
        let n = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let mut payload = vec![0; n];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        })
    }
}
