//! A plugin for the gateway's tests of the message hooks, call properties and plugin metrics.
//! It expects the `synapsor.test.v1.Echo` messages, whose field 1 is the payload bytes in both
//! directions (`EchoRequest.payload`, `EchoReply.payload`).
//!
//! Config: `{ request: true, response: true }` (both default true): which message hooks it asks
//! for. For each message it sees, by its payload (field 1; empty when absent or unreadable):
//!
//! * `reject-me`: ends the call with PERMISSION_DENIED, `rejected message <index>`;
//! * `props`: replaces the payload with the call's properties as text,
//!   `listener=<l>;group=<g>;endpoint=<e>;tls=<sni>;identity=<id>;start=<start-unix-nanos>;elapsed=<elapsed-nanos>`
//!   (`-` for what is not known; `properties=none` if the host has none);
//! * `keep`: lets it through unchanged;
//! * anything else: replaces the payload with `req<index>:<payload>` (request messages) or
//!   `resp<index>:<payload>` (response messages), with `z` after `req`/`resp` when the message
//!   travelled compressed; every other field is kept. A message that
//!   does not parse as protobuf is let through unchanged.
//!
//! It counts every message it sees in `synapsor_wasm_probe_messages_total{plugin, direction}`
//! (`request`/`response`). `on_request` sets the request metadata `x-prop-listener`,
//! `x-prop-tls`, `x-prop-identity` and `x-prop-start` from the call's properties, and, when the
//! request has `x-metric-flood: N`, adds 1 to N series of the counter `flood{n}` (`n` = "0" to
//! "N-1"). `on_response` appends the trailers `x-prop-group`, `x-prop-endpoint` and
//! `x-prop-elapsed`. Values are `-` where a property is `none`.

use serde::Deserialize;
use synapsor_plugin_sdk::wire::{self, Writer};
use synapsor_plugin_sdk::{
    export_plugin, parse_config, properties, CallProperties, Code, Counter, HeaderOp, Hooks,
    Message, MessageAction, Plugin, RequestAction, RequestInfo, ResponseAction, ResponseInfo,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    request: bool,
    response: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request: true,
            response: true,
        }
    }
}

struct MsgProbe {
    hooks: Hooks,
    messages: Counter,
    flood: Counter,
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn props_text(p: &Option<CallProperties>) -> String {
    match p {
        None => "properties=none".into(),
        Some(p) => format!(
            "listener={};group={};endpoint={};tls={};identity={};start={};elapsed={}",
            p.listener,
            or_dash(&p.upstream_group),
            or_dash(&p.upstream_endpoint),
            or_dash(&p.tls_server_name),
            or_dash(&p.client_identity),
            p.start_unix_nanos,
            p.elapsed_nanos
        ),
    }
}

/// `data` with its field 1 (every value of it) replaced by `payload`, or added when absent.
fn with_payload(data: &[u8], payload: Vec<u8>) -> Result<Vec<u8>, wire::WireError> {
    match wire::rewrite(data, &[1], |_| Some(payload.clone()))? {
        Some(out) => Ok(out),
        None => {
            let mut w = Writer::with_capacity(data.len() + payload.len() + 8);
            w.raw(data).bytes(1, &payload);
            Ok(w.into_bytes())
        }
    }
}

impl MsgProbe {
    fn message(&self, msg: &Message, prefix: &str, direction: &str) -> MessageAction {
        self.messages.inc(&[direction]);
        let payload = match wire::last(&msg.data, &[1]) {
            Ok(v) => v.and_then(|v| v.as_bytes()).unwrap_or_default(),
            Err(_) => return MessageAction::Continue,
        };
        let new = match payload {
            b"reject-me" => {
                return MessageAction::reject(
                    Code::PermissionDenied,
                    format!("rejected message {}", msg.index),
                )
            }
            b"keep" => return MessageAction::Continue,
            b"props" => props_text(&properties()).into_bytes(),
            other => {
                // `z` marks a message that travelled compressed.
                let z = if msg.compressed { "z" } else { "" };
                let mut p = format!("{prefix}{z}{}:", msg.index).into_bytes();
                p.extend_from_slice(other);
                p
            }
        };
        match with_payload(&msg.data, new) {
            Ok(out) => MessageAction::Replace(out),
            Err(_) => MessageAction::Continue,
        }
    }
}

impl Plugin for MsgProbe {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        let mut hooks = Hooks::empty();
        if c.request {
            hooks |= Hooks::REQUEST_MESSAGES;
        }
        if c.response {
            hooks |= Hooks::RESPONSE_MESSAGES;
        }
        Ok(MsgProbe {
            hooks,
            messages: Counter::define(
                "probe_messages",
                "Messages msg-probe saw, by direction",
                &["direction"],
            )?,
            flood: Counter::define("flood", "Series made on request by x-metric-flood", &["n"])?,
        })
    }

    fn hooks(&self) -> Hooks {
        self.hooks
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        if let Some(n) = req
            .header("x-metric-flood")
            .and_then(|n| n.trim().parse::<u32>().ok())
        {
            for i in 0..n {
                self.flood.inc(&[&i.to_string()]);
            }
        }
        let p = properties();
        let dash = || "-".to_string();
        RequestAction::Continue(vec![
            HeaderOp::set(
                "x-prop-listener",
                p.as_ref().map_or_else(dash, |p| p.listener.clone()),
            ),
            HeaderOp::set(
                "x-prop-tls",
                p.as_ref()
                    .map_or_else(dash, |p| or_dash(&p.tls_server_name)),
            ),
            HeaderOp::set(
                "x-prop-identity",
                p.as_ref()
                    .map_or_else(dash, |p| or_dash(&p.client_identity)),
            ),
            HeaderOp::set(
                "x-prop-start",
                p.as_ref()
                    .map_or_else(dash, |p| p.start_unix_nanos.to_string()),
            ),
        ])
    }

    fn on_response(&self, _resp: &ResponseInfo) -> ResponseAction {
        let p = properties();
        let dash = || "-".to_string();
        ResponseAction::Continue(vec![
            HeaderOp::append(
                "x-prop-group",
                p.as_ref().map_or_else(dash, |p| or_dash(&p.upstream_group)),
            ),
            HeaderOp::append(
                "x-prop-endpoint",
                p.as_ref()
                    .map_or_else(dash, |p| or_dash(&p.upstream_endpoint)),
            ),
            HeaderOp::append(
                "x-prop-elapsed",
                p.as_ref()
                    .map_or_else(dash, |p| p.elapsed_nanos.to_string()),
            ),
        ])
    }

    fn on_request_message(&self, msg: &Message) -> MessageAction {
        self.message(msg, "req", "request")
    }

    fn on_response_message(&self, msg: &Message) -> MessageAction {
        self.message(msg, "resp", "response")
    }
}

export_plugin!(MsgProbe);
