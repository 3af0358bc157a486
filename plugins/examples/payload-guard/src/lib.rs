//! `payload-guard`: checks every request message before it reaches the upstream: one over
//! `max_bytes` ends the call with RESOURCE_EXHAUSTED (`request message N is X bytes, over
//! max_bytes Y`), one carrying a forbidden field ends it with INVALID_ARGUMENT (`field 2.3 is
//! not allowed`). Response messages are not looked at.
//!
//! Config:
//! * `max_bytes`: the largest message let through, in bytes (the decompressed size); default
//!   65536;
//! * `forbidden_fields`: protobuf field paths (dotted field numbers: `"5"` is field 5, `"2.3"`
//!   field 3 of the message in field 2) that must not be present, with any value; default none;
//! * `methods`: the methods checked: full paths (`/pkg.Service/Method`), or prefixes ending in
//!   `/` (`/pkg.Service/`, every method of the service) or `*` (`/pkg.Service/Get*`); empty
//!   (the default) checks every method;
//! * `on_unparsable`: what to do with a message that does not parse as protobuf when there are
//!   `forbidden_fields` to look for: `reject` (the default: INVALID_ARGUMENT, `request message N
//!   is not a protobuf message`) or `pass`.
//!
//! ```yaml
//! - wasm: { name: guard, path: plugins/build/payload_guard.wasm,
//!           config: { max_bytes: 65536, forbidden_fields: ["5", "2.3"],
//!                     methods: ["/shop.v1.Orders/", "/shop.v1.Admin/Reset"] } }
//! ```

use serde::Deserialize;
use synapsor_plugin_sdk::wire::{self, Path};
use synapsor_plugin_sdk::{
    export_plugin, parse_config, Code, Hooks, Message, MessageAction, Plugin,
};

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnUnparsable {
    Pass,
    #[default]
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    max_bytes: u64,
    forbidden_fields: Vec<String>,
    methods: Vec<String>,
    on_unparsable: OnUnparsable,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_bytes: 65536,
            forbidden_fields: Vec::new(),
            methods: Vec::new(),
            on_unparsable: OnUnparsable::Reject,
        }
    }
}

enum MethodRule {
    Exact(String),
    Prefix(String),
}

impl MethodRule {
    fn parse(s: &str) -> MethodRule {
        if let Some(p) = s.strip_suffix('*') {
            MethodRule::Prefix(p.to_string())
        } else if s.ends_with('/') {
            MethodRule::Prefix(s.to_string())
        } else {
            MethodRule::Exact(s.to_string())
        }
    }

    fn matches(&self, method: &str) -> bool {
        match self {
            MethodRule::Exact(m) => method == m,
            MethodRule::Prefix(p) => method.starts_with(p.as_str()),
        }
    }
}

struct PayloadGuard {
    max_bytes: u64,
    forbidden: Vec<Path>,
    methods: Vec<MethodRule>,
    on_unparsable: OnUnparsable,
}

impl Plugin for PayloadGuard {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        let forbidden = c
            .forbidden_fields
            .iter()
            .map(|f| {
                f.parse::<Path>()
                    .map_err(|e| format!("config.forbidden_fields: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(m) = c.methods.iter().find(|m| m.is_empty() || *m == "*") {
            return Err(format!(
                "config.methods: {m:?} would match every method; leave methods empty for that"
            ));
        }
        Ok(PayloadGuard {
            max_bytes: c.max_bytes,
            forbidden,
            methods: c.methods.iter().map(|m| MethodRule::parse(m)).collect(),
            on_unparsable: c.on_unparsable,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::REQUEST_MESSAGES
    }

    fn on_request_message(&self, msg: &Message) -> MessageAction {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.matches(&msg.method)) {
            return MessageAction::Continue;
        }
        let size = msg.data.len() as u64;
        if size > self.max_bytes {
            return MessageAction::reject(
                Code::ResourceExhausted,
                format!(
                    "request message {} is {size} bytes, over max_bytes {}",
                    msg.index, self.max_bytes
                ),
            );
        }
        for path in &self.forbidden {
            match wire::first(&msg.data, path) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return MessageAction::reject(
                        Code::InvalidArgument,
                        format!("field {path} is not allowed"),
                    )
                }
                Err(_) if self.on_unparsable == OnUnparsable::Pass => {
                    return MessageAction::Continue
                }
                Err(e) => {
                    return MessageAction::reject(
                        Code::InvalidArgument,
                        format!(
                            "request message {} is not a protobuf message ({e})",
                            msg.index
                        ),
                    )
                }
            }
        }
        MessageAction::Continue
    }
}

export_plugin!(PayloadGuard);
