//! A plugin for the gateway's tests of shared state and callouts (contract 0.2.1): a test
//! drives one operation per call from request metadata and reads the result from the status.
//!
//! A call without `x-op` goes on unchanged. A call with `x-op` never reaches an upstream: it
//! ends with FAILED_PRECONDITION (9) whose message is the operation's **result**, or with
//! INVALID_ARGUMENT (3) when the metadata does not make an operation (a missing `x-key`, a bad
//! number or hex, an unknown `x-op`), its message saying what is wrong. No config.
//!
//! Inputs (metadata; `<bytes>` entries take either the raw text of `x-NAME` or, when that is
//! absent, the bytes hex-encoded in `x-NAME-hex`):
//!
//! | `x-op`    | reads                                                       | result                                     |
//! |-----------|-------------------------------------------------------------|--------------------------------------------|
//! | `get`     | `x-key`                                                     | `ok:<value>` / `none` / `err:<e>`          |
//! | `set`     | `x-key`, `x-value` <bytes> (absent: empty), `x-ttl-ms`      | `ok` / `err:<e>`                           |
//! | `delete`  | `x-key`                                                     | `true` / `false` / `err:<e>`               |
//! | `cas`     | `x-key`, `x-expected` <bytes> (absent: none), `x-value` <bytes> (absent: none, i.e. delete), `x-ttl-ms` | `true` / `false` / `err:<e>` |
//! | `incr`    | `x-key`, `x-ttl-ms`                                         | `ok:<new>:<retries>` / `err:<e>` / `err:not-a-number:<value>` / `err:contended:100` |
//! | `callout` | `x-group`, `x-method`, `x-timeout-ms`, `x-message` <bytes> (absent: empty), `x-callout-<name>` | `ok:<message>` / `err:status:<code>:<message>` / `err:<e>` |
//!
//! * `x-ttl-ms`, `x-timeout-ms`: decimal milliseconds; absent = none (kept until deleted; the
//!   YAML's `callouts.timeout`).
//! * `<value>`, `<message>`: the bytes as UTF-8 (invalid sequences replaced by U+FFFD), or as
//!   lower-case hex when the request has `x-answer: hex`.
//! * `<e>`: the SDK error's `Display`: for state `too-large: <detail>`, `full`,
//!   `unavailable: <detail>`; for callouts `not-allowed: <detail>`, `limited: <detail>`,
//!   `timeout`, `unavailable: <detail>`, `invalid: <detail>`. A callout's status error is
//!   `err:status:<code>:<message>` instead (`<code>` a number, 1 to 16).
//! * `incr`: the value is a decimal `u64` (absent = 0); reads it, then compare-and-swaps it
//!   for value + 1, retrying from the read up to 100 times when another call changed it in
//!   between. `<new>` is the value it wrote, `<retries>` how many swaps failed first.
//! * `callout`: every request metadata entry `x-callout-<name>` is sent as `<name>` (say
//!   `x-callout-authorization: Bearer allow-1`).

mod hex;

use std::time::Duration;

use synapsor_plugin_sdk::{
    export_plugin, state, Call, CalloutError, Code, Plugin, RequestAction, RequestInfo, StateError,
};

struct StateProbe;

/// Why the metadata does not make an operation (INVALID_ARGUMENT).
type Usage = String;

/// A result, and whether byte values in it are written as hex.
struct Out {
    hex: bool,
}

impl Out {
    fn bytes(&self, b: &[u8]) -> String {
        if self.hex {
            hex::encode(b)
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    }
}

fn err(e: &StateError) -> String {
    format!("err:{e}")
}

fn key(req: &RequestInfo) -> Result<&str, Usage> {
    req.header("x-key")
        .ok_or_else(|| "x-key is required".into())
}

/// `x-NAME` as raw bytes, else `x-NAME-hex` decoded; `None` when both are absent.
fn bytes(req: &RequestInfo, name: &str) -> Result<Option<Vec<u8>>, Usage> {
    if let Some(v) = req.header(name) {
        return Ok(Some(v.as_bytes().to_vec()));
    }
    match req.header(&format!("{name}-hex")) {
        Some(h) => hex::decode(h)
            .map(Some)
            .map_err(|e| format!("{name}-hex: {e}")),
        None => Ok(None),
    }
}

/// `x-NAME` as decimal milliseconds; `None` when absent.
fn millis(req: &RequestInfo, name: &str) -> Result<Option<u64>, Usage> {
    match req.header(name) {
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a number of milliseconds")),
        None => Ok(None),
    }
}

fn ttl(req: &RequestInfo) -> Result<Option<Duration>, Usage> {
    Ok(millis(req, "x-ttl-ms")?.map(Duration::from_millis))
}

fn get(req: &RequestInfo, out: &Out) -> Result<String, Usage> {
    Ok(match state::get(key(req)?) {
        Ok(Some(v)) => format!("ok:{}", out.bytes(&v)),
        Ok(None) => "none".into(),
        Err(e) => err(&e),
    })
}

fn set(req: &RequestInfo) -> Result<String, Usage> {
    let value = bytes(req, "x-value")?.unwrap_or_default();
    Ok(match state::set(key(req)?, &value, ttl(req)?) {
        Ok(()) => "ok".into(),
        Err(e) => err(&e),
    })
}

fn delete(req: &RequestInfo) -> Result<String, Usage> {
    Ok(match state::delete(key(req)?) {
        Ok(b) => b.to_string(),
        Err(e) => err(&e),
    })
}

fn cas(req: &RequestInfo) -> Result<String, Usage> {
    let expected = bytes(req, "x-expected")?;
    let value = bytes(req, "x-value")?;
    let swapped =
        state::compare_and_swap(key(req)?, expected.as_deref(), value.as_deref(), ttl(req)?);
    Ok(match swapped {
        Ok(b) => b.to_string(),
        Err(e) => err(&e),
    })
}

/// Retries after a failed swap, before `incr` gives up.
const INCR_RETRIES: u32 = 100;

fn incr(req: &RequestInfo, out: &Out) -> Result<String, Usage> {
    let (key, ttl) = (key(req)?, ttl(req)?);
    for retries in 0..=INCR_RETRIES {
        let old = match state::get(key) {
            Ok(v) => v,
            Err(e) => return Ok(err(&e)),
        };
        let n = match old.as_deref() {
            None => 0,
            Some(v) => match parse_u64(v) {
                Some(n) => n,
                None => return Ok(format!("err:not-a-number:{}", out.bytes(v))),
            },
        };
        let new = n.wrapping_add(1).to_string();
        match state::compare_and_swap(key, old.as_deref(), Some(new.as_bytes()), ttl) {
            Ok(true) => return Ok(format!("ok:{new}:{retries}")),
            Ok(false) => continue,
            Err(e) => return Ok(err(&e)),
        }
    }
    Ok(format!("err:contended:{INCR_RETRIES}"))
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn callout(req: &RequestInfo, out: &Out) -> Result<String, Usage> {
    let group = req.header("x-group").ok_or("x-group is required")?;
    let method = req.header("x-method").ok_or("x-method is required")?;
    let mut call = Call::new(group, method).message(bytes(req, "x-message")?.unwrap_or_default());
    if let Some(ms) = millis(req, "x-timeout-ms")? {
        call = call.timeout(Duration::from_millis(ms));
    }
    for h in &req.metadata {
        if let Some(name) = h.name.strip_prefix("x-callout-") {
            call = call.metadata(name, h.value.clone());
        }
    }
    Ok(match call.send() {
        Ok(resp) => format!("ok:{}", out.bytes(&resp.message)),
        Err(CalloutError::Status(st)) => format!("err:status:{}:{}", st.code, st.message),
        Err(e) => format!("err:{e}"),
    })
}

impl Plugin for StateProbe {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(StateProbe)
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        let Some(op) = req.header("x-op") else {
            return RequestAction::proceed();
        };
        let out = Out {
            hex: req.header("x-answer") == Some("hex"),
        };
        let result = match op {
            "get" => get(req, &out),
            "set" => set(req),
            "delete" => delete(req),
            "cas" => cas(req),
            "incr" => incr(req, &out),
            "callout" => callout(req, &out),
            other => Err(format!("unknown x-op {other:?}")),
        };
        match result {
            Ok(text) => RequestAction::reject(Code::FailedPrecondition, text),
            Err(usage) => RequestAction::reject(Code::InvalidArgument, usage),
        }
    }
}

export_plugin!(StateProbe);
