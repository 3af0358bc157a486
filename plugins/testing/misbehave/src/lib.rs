//! A plugin for the gateway's safety tests: it behaves (reads every metadata entry and lets the
//! call through) unless the call's `x-misbehave` entry asks it to fail in one particular way:
//! `loop`, `log-flood`, `counter-flood` (spin, or call the host, until the timeout), `alloc`,
//! `panic`, `recurse`, `huge-headers`, `illegal-header`, `pseudo-header`, `request-status`
//! (sets the gateway-owned `grpc-status` on the request), `bad-code`.
//! With `config: { fail_init: true }` its `init` fails; with `spin_init: true` it never returns.
//!
//! Through callouts and shared state (contract 0.2.1), each ending the call with ABORTED and a
//! message saying how far it got:
//!
//! * `callout-loop`: calls the group `config.callout_group` until a call fails (at the latest,
//!   `callouts.max_per_hook`): `after <n> calls: <error>`;
//! * `callout-blackhole`: one call to the group named by `x-group`: `ok` or `<error>`;
//! * `state-huge`: sets values of 1 MiB, 2 MiB, … (up to 1024 MiB) under new keys until one
//!   fails: `after <n> sets: <error>` (or `set 1024 values without an error`);
//! * `state-keys`: sets up to 1,000,000 distinct small keys until one fails:
//!   `after <n> keys: <error>` (or `set 1000000 keys without an error`).
//!
//! The callouts call `x-method` (default `/synapsor.test.v1.Echo/Unary`) with an empty message,
//! and `x-timeout-ms` when given; `<error>` is the SDK's `CalloutError` or `StateError` text.
//!
//! With `config: { messages: true }` it also asks for the request messages, and
//! `on_request_message` misbehaves according to the message's field 1 (the payload bytes of
//! `synapsor.test.v1.EchoRequest`): `loop` (spins forever), `alloc` (allocates without bound),
//! `panic`, `huge` (answers a 5 MiB replacement: a message whose field 1 is 5 MiB less 5
//! bytes of `x`), `log-flood` (calls the host's `log` until the timeout); any other payload, or
//! a message that does not parse, is let through unchanged.

mod io;

use serde::Deserialize;
use synapsor_plugin_sdk::wire::{self, Writer};
use synapsor_plugin_sdk::{
    export_plugin, parse_config, HeaderOp, Hooks, Message, MessageAction, Plugin, Reject,
    RequestAction, RequestInfo,
};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    fail_init: bool,
    spin_init: bool,
    messages: bool,
    response_messages: bool,
    /// The group `callout-loop` calls (empty: none, so the first call is not allowed).
    callout_group: String,
}

struct Misbehave {
    messages: bool,
    response_messages: bool,
    callout_group: String,
}

/// The size of the `huge` replacement: 5 MiB, over the default `max_message_size` (4 MiB) and,
/// with its copy, within the safety tests' 16 MiB memory limit.
const HUGE: usize = 5 << 20;

/// A message of exactly [`HUGE`] bytes: field 1 holding `x`s (1 tag byte, 4 length bytes).
fn huge_message() -> Vec<u8> {
    let payload = vec![b'x'; HUGE - 1 - wire::varint_len((HUGE - 5) as u64)];
    let mut w = Writer::with_capacity(HUGE);
    w.bytes(1, &payload);
    w.into_bytes()
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, buf: &mut [u64; 64]) -> u64 {
    buf[(depth % 64) as usize] = depth;
    let mut next = *buf;
    recurse(std::hint::black_box(depth + 1), &mut next) + next[3]
}

impl Plugin for Misbehave {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        if c.fail_init {
            return Err("refusing to start: fail_init is set".into());
        }
        if c.spin_init {
            let mut i = 0u64;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        Ok(Misbehave {
            messages: c.messages,
            response_messages: c.response_messages,
            callout_group: c.callout_group,
        })
    }

    fn hooks(&self) -> Hooks {
        let mut hooks = Hooks::empty();
        if self.messages {
            hooks |= Hooks::REQUEST_MESSAGES;
        }
        if self.response_messages {
            // Continued unseen (the SDK's default hook): what a message hook costs.
            hooks |= Hooks::RESPONSE_MESSAGES;
        }
        hooks
    }

    fn on_request_message(&self, msg: &Message) -> MessageAction {
        let payload = match wire::last(&msg.data, &[1]) {
            Ok(v) => v.and_then(|v| v.as_bytes()).unwrap_or_default(),
            Err(_) => return MessageAction::Continue,
        };
        match payload {
            b"loop" => {
                let mut i = 0u64;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            b"alloc" => {
                // 8 MiB at a time, all kept and touched, until the memory limit stops it (in
                // a few steps: the outcome must not depend on how fast a loaded machine is).
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    kept.push(vec![7u8; 8 << 20]);
                    std::hint::black_box(&kept);
                }
            }
            b"panic" => panic!("asked to panic on message {}", msg.index),
            b"huge" => MessageAction::Replace(huge_message()),
            b"log-flood" => loop {
                synapsor_plugin_sdk::log(synapsor_plugin_sdk::Level::Debug, "flood");
            },
            _ => MessageAction::Continue,
        }
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        let mut seen = 0usize;
        for h in &req.metadata {
            seen += h.name.len() + h.value.len();
        }
        std::hint::black_box(seen);
        match req.header("x-misbehave") {
            Some("loop") => {
                let mut i = 0u64;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            Some("log-flood") => loop {
                // Host calls as fast as they go, until the timeout stops it.
                synapsor_plugin_sdk::log(synapsor_plugin_sdk::Level::Debug, "flood");
            },
            Some("counter-flood") => {
                let mut i = 0u64;
                loop {
                    i = i.wrapping_add(1);
                    synapsor_plugin_sdk::counter_add(&format!("k{}", i % 100), 1);
                }
            }
            Some("request-status") => RequestAction::Continue(vec![
                HeaderOp::set("grpc-status", "0"),
                HeaderOp::set("grpc-message", "forged"),
            ]),
            Some("alloc") => {
                let big = vec![7u8; 1 << 30];
                RequestAction::reject(
                    synapsor_plugin_sdk::Code::Internal,
                    format!(
                        "allocated {}",
                        big.iter().map(|b| *b as usize).sum::<usize>()
                    ),
                )
            }
            Some("panic") => panic!("asked to panic"),
            Some("recurse") => {
                let mut buf = [0u64; 64];
                let n = recurse(0, &mut buf);
                RequestAction::reject(synapsor_plugin_sdk::Code::Internal, n.to_string())
            }
            Some("huge-headers") => RequestAction::Continue(
                (0..10_000)
                    .map(|i| HeaderOp::append(format!("x-h{i}"), "v".repeat(100)))
                    .collect(),
            ),
            Some("illegal-header") => {
                RequestAction::Continue(vec![HeaderOp::set("Bad Name", "line\r\nbreak")])
            }
            Some("pseudo-header") => RequestAction::Continue(vec![HeaderOp::set(":path", "/x")]),
            Some("callout-loop") => io::callout_loop(&self.callout_group, req),
            Some("callout-blackhole") => io::callout_once(req),
            Some("state-huge") => io::state_huge(req),
            Some("state-keys") => io::state_keys(req),
            Some("bad-code") => RequestAction::Reject(Reject {
                code: 99,
                message: "no such code".into(),
                trailers: Vec::new(),
            }),
            _ => RequestAction::proceed(),
        }
    }
}

export_plugin!(Misbehave);
