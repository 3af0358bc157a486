//! Reading a callout's answer: the response head, at most one message (bounded, decompressed
//! when gzip or deflate), and the status from the trailers or a trailers-only head ("gRPC over
//! HTTP/2", PROTOCOL-HTTP2.md).

use bytes::{Buf, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;

use super::super::bindings::{CalloutError, CalloutResponse, CalloutStatus, Header};
use super::super::codec::{self, Encoding, Unreadable};
use crate::grpc;
use crate::stack::Response;

/// The whole answer of `resp`: OK with its message, the service's status, or `invalid` when it
/// is not a well-formed unary gRPC answer of at most `limit` bytes of message.
pub async fn read(resp: Response, limit: usize) -> Result<CalloutResponse, CalloutError> {
    let (head, mut body) = resp.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(CalloutError::Invalid(format!(
            "the service answered HTTP {}, not a gRPC response",
            head.status
        )));
    }
    if grpc::status_code(&head.headers).is_some() {
        // Trailers-only: the head is the status block.
        return status(&head.headers).map(|()| CalloutResponse {
            headers: Vec::new(),
            message: Vec::new(),
            trailers: others(&head.headers),
        });
    }
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CalloutError::Unavailable(format!("answer lost: {e}")))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > limit + codec::PREFIX {
                    return Err(too_large(limit));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let trailers = trailers
        .ok_or_else(|| CalloutError::Invalid("the answer ended without trailers".into()))?;
    status(&trailers)?;
    Ok(CalloutResponse {
        message: message(data, &head.headers, limit)?,
        headers: others(&head.headers),
        trailers: others(&trailers),
    })
}

/// `Ok` for status OK, the service's status otherwise.
fn status(block: &HeaderMap) -> Result<(), CalloutError> {
    let code = grpc::status_code(block)
        .ok_or_else(|| CalloutError::Invalid("the answer has no valid grpc-status".into()))?;
    if code == 0 {
        return Ok(());
    }
    let message = block
        .get(grpc::GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    Err(CalloutError::Status(CalloutStatus {
        code: code.min(u32::MAX as usize) as u32,
        message,
        trailers: others(block),
    }))
}

/// The one message of a unary answer (empty when there is none).
fn message(mut data: BytesMut, head: &HeaderMap, limit: usize) -> Result<Vec<u8>, CalloutError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let (compressed, len) = match codec::header(&data) {
        Some(Ok(h)) => h,
        Some(Err(flag)) => {
            return Err(CalloutError::Invalid(format!("message flag {flag}")));
        }
        None => return Err(CalloutError::Invalid("a cut message".into())),
    };
    if data.len() != codec::PREFIX + len {
        return Err(CalloutError::Invalid(
            "the answer is not exactly one message (a unary call answers one)".into(),
        ));
    }
    data.advance(codec::PREFIX);
    if !compressed {
        return Ok(data.to_vec());
    }
    codec::decompress(&Encoding::of(head), &data, limit).map_err(|e| match e {
        Unreadable::TooLarge => too_large(limit),
        Unreadable::Encoding => CalloutError::Invalid(format!(
            "a message compressed with {:?}, which the gateway does not read",
            Encoding::of(head).name()
        )),
        Unreadable::Corrupt(e) => CalloutError::Invalid(format!("a corrupt message: {e}")),
    })
}

fn too_large(limit: usize) -> CalloutError {
    CalloutError::Invalid(format!(
        "the answer's message is over max_message_size ({limit} bytes)"
    ))
}

/// The entries of a head or trailer block, without the status fields and `content-type`.
fn others(block: &HeaderMap) -> Vec<Header> {
    block
        .iter()
        .filter(|(n, _)| {
            **n != grpc::GRPC_STATUS
                && **n != grpc::GRPC_MESSAGE
                && **n != http::header::CONTENT_TYPE
        })
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect()
}
