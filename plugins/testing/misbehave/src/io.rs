//! Misbehaviour through callouts and shared state (contract 0.2.1): each mode ends the call
//! with ABORTED and a message saying how far it got and the error that stopped it.

use std::time::Duration;

use synapsor_plugin_sdk::{state, Call, Code, RequestAction, RequestInfo};

/// The method called when the request names none (`x-method`): the echo backend's unary call,
/// whose empty request is a valid `EchoRequest`.
const DEFAULT_METHOD: &str = "/synapsor.test.v1.Echo/Unary";

/// The largest value `state-huge` sets, in MiB (a plugin's memory limit stops it sooner).
const MAX_HUGE_MIB: usize = 1024;

/// The most keys `state-keys` sets.
const MAX_KEYS: u64 = 1_000_000;

fn aborted(message: String) -> RequestAction {
    RequestAction::reject(Code::Aborted, message)
}

fn call(group: &str, req: &RequestInfo) -> Call {
    let method = req.header("x-method").unwrap_or(DEFAULT_METHOD);
    let mut call = Call::new(group, method);
    if let Some(ms) = req.header("x-timeout-ms").and_then(|v| v.parse().ok()) {
        call = call.timeout(Duration::from_millis(ms));
    }
    call
}

/// `callout-loop`: calls `group` again and again until a call fails (the per-hook bound, at
/// the latest): `after <n> calls: <error>`.
pub fn callout_loop(group: &str, req: &RequestInfo) -> RequestAction {
    let call = call(group, req);
    let mut n = 0u64;
    loop {
        match call.send() {
            Ok(_) => n += 1,
            Err(e) => return aborted(format!("after {n} calls: {e}")),
        }
    }
}

/// `callout-blackhole`: one call to the group named by `x-group`: `ok`, or its error.
pub fn callout_once(req: &RequestInfo) -> RequestAction {
    let group = req.header("x-group").unwrap_or_default();
    match call(group, req).send() {
        Ok(_) => aborted("ok".into()),
        Err(e) => aborted(e.to_string()),
    }
}

/// `state-huge`: sets values of 1 MiB, 2 MiB, … under new keys until one fails:
/// `after <n> sets: <error>` (or `set 1024 values without an error`).
pub fn state_huge(req: &RequestInfo) -> RequestAction {
    for mib in 1..=MAX_HUGE_MIB {
        let value = vec![b'h'; mib << 20];
        let key = format!("huge:{}:{mib}", req.call_id);
        if let Err(e) = state::set(&key, &value, None) {
            return aborted(format!("after {} sets: {e}", mib - 1));
        }
    }
    aborted(format!("set {MAX_HUGE_MIB} values without an error"))
}

/// `state-keys`: sets up to [`MAX_KEYS`] distinct small keys until one fails:
/// `after <n> keys: <error>`, or `set <MAX_KEYS> keys without an error`.
pub fn state_keys(req: &RequestInfo) -> RequestAction {
    for i in 0..MAX_KEYS {
        let key = format!("k:{}:{i}", req.call_id);
        if let Err(e) = state::set(&key, b"v", None) {
            return aborted(format!("after {i} keys: {e}"));
        }
    }
    aborted(format!("set {MAX_KEYS} keys without an error"))
}
