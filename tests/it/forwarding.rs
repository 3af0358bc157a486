//! Transparent forwarding of the four call kinds: payloads, metadata (ASCII and `-bin`),
//! trailers, statuses with messages and details, trailers-only answers, early trailers,
//! compression and a 64 MiB message — real tonic clients and servers over 127.0.0.1.

use crate::support;

use std::time::Duration;

use support::{config, gateway};
use synapsor_testkit::{Backend, EchoRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

fn req(payload: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: payload.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_carries_payload_and_metadata_both_ways() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    let mut r = Request::new(req(b"hello"));
    r.metadata_mut().insert("x-user", "alice".parse().unwrap());
    r.metadata_mut().insert_bin(
        "x-blob-bin",
        MetadataValue::from_bytes(&[0, 1, 2, 255, 10, 13]),
    );
    let resp = c.unary(r).await.expect("unary through the gateway");
    assert_eq!(resp.get_ref().payload, b"hello");
    assert_eq!(resp.get_ref().backend, "b1");
    assert_eq!(resp.metadata().get("x-user").unwrap(), "alice");
    let bin = resp
        .metadata()
        .get_bin("x-blob-bin")
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(&bin[..], &[0, 1, 2, 255, 10, 13]);
    let seen = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("x-user").unwrap(), "alice");
    let bin = seen.get_bin("x-blob-bin").unwrap().to_bytes().unwrap();
    assert_eq!(&bin[..], &[0, 1, 2, 255, 10, 13]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_message_details_and_trailers_pass_through_unchanged() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    let r = EchoRequest {
        fail_code: Code::FailedPrecondition as i32,
        fail_message: "nope: ü 100% \n done".into(),
        fail_details: vec![8, 9, 0, 255],
        ..Default::default()
    };
    // tonic answers a failed unary call trailers-only; it must arrive as such.
    let st = c.unary(r).await.expect_err("status");
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert_eq!(st.message(), "nope: ü 100% \n done");
    assert_eq!(st.details(), &[8, 9, 0, 255]);
    assert_eq!(st.metadata().get("x-trailer").unwrap(), "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_then_status_in_trailers() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    let mut r = Request::new(EchoRequest {
        reply_count: 5,
        reply_size: 1000,
        fail_code: Code::Aborted as i32,
        fail_message: "after five".into(),
        ..Default::default()
    });
    r.metadata_mut().insert("x-req", "s".parse().unwrap());
    let resp = c.server_stream(r).await.unwrap();
    assert_eq!(
        resp.metadata().get("x-req").unwrap(),
        "s",
        "headers before messages"
    );
    let mut stream = resp.into_inner();
    let mut seqs = Vec::new();
    let end = loop {
        match stream.next().await {
            Some(Ok(m)) => {
                assert_eq!(m.payload.len(), 1000);
                seqs.push(m.seq);
            }
            Some(Err(st)) => break st,
            None => panic!("stream ended without the status"),
        }
    };
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert_eq!(end.code(), Code::Aborted);
    assert_eq!(end.message(), "after five");
    assert_eq!(end.metadata().get("x-trailer").unwrap(), "failed");
}

/// The gateway joins DATA frames that are already waiting into larger ones: message
/// boundaries, order and the closing status must come through exactly, whether messages are
/// much smaller than the 16 KiB join limit or straddle it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_frames_keep_every_message_and_the_status() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    for (count, size) in [(5000u32, 37usize), (400, 6000), (50, 70_000)] {
        let r = EchoRequest {
            reply_count: count,
            reply_size: size as u32,
            fail_code: Code::DataLoss as i32,
            fail_message: format!("after {count}"),
            ..Default::default()
        };
        let mut stream = c.server_stream(r).await.unwrap().into_inner();
        let mut next = 0;
        let end = loop {
            match stream.next().await {
                Some(Ok(m)) => {
                    assert_eq!(m.seq, next, "messages in order, none lost");
                    assert_eq!(m.payload.len(), size);
                    next += 1;
                }
                Some(Err(st)) => break st,
                None => panic!("stream ended without the status"),
            }
        };
        assert_eq!(next, count);
        assert_eq!(end.code(), Code::DataLoss);
        assert_eq!(end.message(), format!("after {count}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_counts_every_message() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    let msgs: Vec<EchoRequest> = (0..50).map(|i| req(&vec![1; 100 + i])).collect();
    let total: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let resp = c
        .client_stream(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.messages_received, 50);
    assert_eq!(resp.bytes_received, total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_ping_pong_interleaves() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(req(b"0")).await.unwrap();
    let mut replies = c.bidi(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for i in 0..20u32 {
        // Each reply must arrive before the next request is sent: nothing is held back.
        let r = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .expect("reply in time")
            .unwrap()
            .unwrap();
        assert_eq!(r.payload, i.to_string().as_bytes());
        assert_eq!(r.seq, i);
        if i < 19 {
            tx.send(req((i + 1).to_string().as_bytes())).await.unwrap();
        }
    }
    drop(tx);
    assert!(replies.next().await.is_none(), "clean end after half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_before_client_half_close_is_not_cancelled() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    for (code, expect) in [(0, Code::Ok), (Code::NotFound as i32, Code::NotFound)] {
        let (tx, rx) = mpsc::channel(4);
        tx.send(EchoRequest {
            end_early: true,
            fail_code: code,
            fail_message: "early".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut stream = c.bidi(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let mut got = Code::Ok;
        let t = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(item) = stream.next().await {
                if let Err(st) = item {
                    got = st.code();
                    break;
                }
            }
        });
        t.await
            .expect("the call ends although the client never half-closed");
        assert_eq!(got, expect);
        drop(tx); // the client's side was open the whole time
    }
    // Client streaming: the upstream answers after the first message, the client still sending.
    let (tx, rx) = mpsc::channel(4);
    tx.send(EchoRequest {
        end_early: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        c.client_stream(ReceiverStream::new(rx)),
    )
    .await
    .expect("answer in time")
    .expect("OK, not CANCELLED");
    assert_eq!(resp.get_ref().messages_received, 1);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_pass_untouched() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw
        .client()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let payload = vec![b'z'; 100_000];
    let resp = c.unary(req(&payload)).await.unwrap();
    assert_eq!(resp.get_ref().payload, payload);
    let seen = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("grpc-encoding").unwrap(), "gzip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_of_64_mib_streams_through() {
    let b = Backend::start("b1").await;
    let gw = gateway(&config(&[b.addr.to_string()], "")).await;
    let mut c = gw.client().await;
    let payload: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let resp = tokio::time::timeout(Duration::from_secs(120), c.unary(req(&payload)))
        .await
        .expect("64 MiB round trip in time")
        .unwrap();
    assert!(resp.get_ref().payload == payload, "64 MiB echoed intact");
}
