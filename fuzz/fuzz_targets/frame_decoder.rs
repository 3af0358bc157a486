//! The gRPC message-frame decoder (5-byte prefix, then the payload), fed the same bytes in
//! arbitrary chunks: it never panics and counts the same messages as a plain reading of the
//! whole stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Messages that begin in `bytes`, read front to back.
fn reference(bytes: &[u8]) -> u64 {
    let (mut at, mut n) = (0usize, 0u64);
    while at + 5 <= bytes.len() {
        n += 1;
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        at = match (at + 5).checked_add(len as usize) {
            Some(next) => next,
            None => break,
        };
    }
    n
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk sizes; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut framing = synapsor::grpc::Framing::default();
    let mut counted = 0;
    let mut rest = stream;
    let mut step = usize::from(seed % 17) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        counted += framing.feed(&rest[..n]);
        rest = &rest[n..];
        step = step * 7 % 23 + 1;
    }
    assert_eq!(counted, reference(stream));
});
