//! The message-plugin examples (`plugins/examples/`) over real sockets: `pii-redact` masks
//! fields by number in both directions, `payload-guard` refuses large request messages and
//! forbidden fields, `message-metrics` shows message sizes per method on `/metrics`.

use crate::support;

use support::{gateway, http_get, staged_config as cfg, wasm_stage as wasm};
use synapsor_testkit::{Backend, EchoRequest};
use tonic::Code;

/// A payload that is itself a protobuf message: field 1 a name, field 2 an e-mail address,
/// field 3 a number (varint).
fn person(name: &str, email: &str) -> Vec<u8> {
    let mut m = vec![0x0a, name.len() as u8];
    m.extend_from_slice(name.as_bytes());
    m.push(0x12);
    m.push(email.len() as u8);
    m.extend_from_slice(email.as_bytes());
    m.extend_from_slice(&[0x18, 0x2a]);
    m
}

fn msg(payload: Vec<u8>) -> EchoRequest {
    EchoRequest {
        payload,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_redact_masks_fields_by_number_both_ways() {
    let b = Backend::start("b").await;
    let stage = wasm(
        "pii",
        "pii_redact",
        r#", config: { fields: ["1.1"], replacement: "***" }"#,
    );
    let gw = gateway(&cfg(&b.addr.to_string(), &stage)).await;
    let mut c = gw.client().await;
    let r = c
        .unary(msg(person("Ada Lovelace", "ada@example.invalid")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.payload,
        person("***", "ada@example.invalid"),
        "only 1.1, the rest kept"
    );
    // The backend got the masked request: client streaming counts the bytes it received.
    let stream = tokio_stream::iter([msg(person("Ada Lovelace", "a@b"))]);
    let r = c.client_stream(stream).await.unwrap().into_inner();
    assert_eq!(r.bytes_received as usize, person("***", "a@b").len());
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    for dir in ["request", "response"] {
        let line =
            format!("synapsor_wasm_pii_redactions_total{{plugin=\"pii\",direction=\"{dir}\"}}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_guard_refuses_large_messages_and_forbidden_fields() {
    let b = Backend::start("b").await;
    let stage = wasm(
        "guard",
        "payload_guard",
        r#", config: { max_bytes: 1000, forbidden_fields: ["4"] }"#,
    );
    let gw = gateway(&cfg(&b.addr.to_string(), &stage)).await;
    let mut c = gw.client().await;
    c.unary(msg(vec![1; 100]))
        .await
        .expect("a small message passes");
    let st = c.unary(msg(vec![1; 2000])).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(
        st.message().contains("over max_bytes 1000"),
        "{}",
        st.message()
    );
    // Field 4 is `delay_ms`.
    let delayed = EchoRequest {
        delay_ms: 1,
        ..Default::default()
    };
    let st = c.unary(delayed).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert_eq!(st.message(), "field 4 is not allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_metrics_shows_message_sizes_per_method() {
    let b = Backend::start("b").await;
    let gw = gateway(&cfg(
        &b.addr.to_string(),
        &wasm("mm", "message_metrics", ""),
    ))
    .await;
    let mut c = gw.client().await;
    for _ in 0..3 {
        c.unary(msg(vec![7; 500])).await.unwrap();
    }
    let (_, metrics) = http_get(gw.admin.unwrap(), "/metrics").await;
    let method = "/synapsor.test.v1.Echo/Unary";
    for line in [
        "# TYPE synapsor_wasm_message_bytes histogram".to_string(),
        format!("synapsor_wasm_messages_total{{plugin=\"mm\",method=\"{method}\",direction=\"request\"}} 3"),
        // 500 B of payload and its 3 bytes of tag and length: in the 1 KiB bucket, not 256.
        format!("synapsor_wasm_message_bytes_bucket{{le=\"256.0\",plugin=\"mm\",method=\"{method}\",direction=\"request\"}} 0"),
        format!("synapsor_wasm_message_bytes_bucket{{le=\"1024.0\",plugin=\"mm\",method=\"{method}\",direction=\"request\"}} 3"),
        format!("synapsor_wasm_message_bytes_count{{plugin=\"mm\",method=\"{method}\",direction=\"response\"}} 3"),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
