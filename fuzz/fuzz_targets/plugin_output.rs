//! The checker of what a plugin returns (header operations, rejections, status overrides):
//! arbitrary names, values, codes and messages never panic, and whatever it accepts applies to a
//! header map without touching pseudo-headers, the gateway's own headers or the status.
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use synapsor::plugin::bindings::{Header, HeaderOp, Reject};
use synapsor::plugin::convert::{apply, check_ops, rejection, status_override, Target};

/// Splits fuzz input into strings at 0xFF bytes (lossy UTF-8, as a guest's strings are UTF-8).
fn strings(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0xFF)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let s = strings(rest);
    let mut ops = Vec::new();
    for pair in s.chunks(2) {
        let name = pair[0].clone();
        let value = pair.get(1).cloned().unwrap_or_default();
        ops.push(match name.len() % 3 {
            0 => HeaderOp::Set(Header { name, value }),
            1 => HeaderOp::Append(Header { name, value }),
            _ => HeaderOp::Remove(name),
        });
    }
    let target = if kind & 1 == 0 {
        Target::Request
    } else {
        Target::Status
    };
    if let Ok(checked) = check_ops(&ops, target) {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        apply(checked, &mut h);
        assert_eq!(h.get("content-type").unwrap(), "application/grpc");
        if target == Target::Status {
            assert!(h.get("grpc-status").is_none());
        }
    }
    let code = u32::from(kind >> 1) % 20;
    let message = s.first().cloned().unwrap_or_default();
    let trailers = s
        .iter()
        .skip(1)
        .map(|n| Header {
            name: n.clone(),
            value: "v".into(),
        })
        .collect();
    if let Ok(r) = rejection(&Reject {
        code,
        message: message.clone(),
        trailers,
    }) {
        assert!(r.code as u32 >= 1 && r.code as u32 <= 16);
        let t = r.trailers();
        assert!(t.get("grpc-status").is_none() && t.get("grpc-message").is_none());
    }
    if let Ok(c) = status_override(code, &message) {
        assert!(c as u32 <= 16);
    }
});
