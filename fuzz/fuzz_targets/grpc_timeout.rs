//! The `grpc-timeout` parser: never panics; what it accepts re-encodes to a value that parses
//! back to at most the same duration (the gateway forwards the remaining budget rounded down).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = synapsor::grpc::parse_timeout(data) {
        let encoded = synapsor::grpc::encode_timeout(d);
        let back = synapsor::grpc::parse_timeout(encoded.as_bytes())
            .unwrap_or_else(|| panic!("{encoded:?} does not parse back"));
        assert!(
            back <= d,
            "{d:?} encoded as {encoded:?} parsed back as {back:?}"
        );
        assert!(
            encoded.len() <= 9,
            "{encoded:?} is longer than the spec allows"
        );
    }
});
