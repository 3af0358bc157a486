//! `pii-redact`: replaces every string or bytes value at the configured protobuf field paths,
//! in request and response messages, with a fixed text, so what is behind those fields never
//! reaches the upstream (requests) or the client (responses).
//!
//! A path is dotted field numbers: `"3"` is field 3 of the message, `"2.1"` is field 1 of the
//! message in field 2 (of every one, when field 2 is repeated). Every len-delimited value at a
//! path is replaced (all of a repeated field's); the rest of the message is kept byte for byte.
//! No schema is involved, so a path must name string/bytes fields: a path ending at an embedded
//! message replaces the whole sub-message, and one that descends through a string is an error
//! (the message is then unparsable, below). A path inside another one (`"2.1"` with `"2"`)
//! is dropped: the outer one already replaces it.
//!
//! A message that does not parse as protobuf (or whose sub-messages on a path do not) is passed
//! on unchanged, logged at debug once per instance; with `on_unparsable: reject` the call ends
//! with INVALID_ARGUMENT instead (in either direction).
//!
//! Config:
//! * `fields` (required): the paths;
//! * `replacement`: the text written instead, default `[redacted]`;
//! * `on_unparsable`: `pass` (default) or `reject`.
//!
//! ```yaml
//! - wasm: { name: pii, path: plugins/build/pii_redact.wasm,
//!           config: { fields: ["2.1", "3"], replacement: "[redacted]", on_unparsable: pass } }
//! ```
//!
//! Metric: `synapsor_wasm_pii_redactions_total{plugin, direction}` (`request`/`response`), the
//! number of values replaced.

use std::borrow::Cow;
use std::cell::Cell;

use serde::Deserialize;
use synapsor_plugin_sdk::wire::{self, Path};
use synapsor_plugin_sdk::{
    export_plugin, log, parse_config, Code, Counter, Hooks, Level, Message, MessageAction, Plugin,
};

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnUnparsable {
    #[default]
    Pass,
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    fields: Vec<String>,
    replacement: String,
    on_unparsable: OnUnparsable,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fields: Vec::new(),
            replacement: "[redacted]".into(),
            on_unparsable: OnUnparsable::Pass,
        }
    }
}

struct PiiRedact {
    paths: Vec<Path>,
    replacement: Vec<u8>,
    on_unparsable: OnUnparsable,
    redactions: Counter,
    /// Whether this instance already logged an unparsable message.
    logged: Cell<bool>,
}

/// Drops every path that another one contains (`"2.1"` when `"2"` is there) and duplicates.
fn outermost(mut paths: Vec<Path>) -> Vec<Path> {
    paths.sort_by_key(|p| p.numbers().len());
    let mut kept: Vec<Path> = Vec::new();
    for p in paths {
        if !kept.iter().any(|k| k.is_prefix_of(&p)) {
            kept.push(p);
        }
    }
    kept
}

impl PiiRedact {
    fn redact(&self, msg: &Message, direction: &str) -> MessageAction {
        let mut data = Cow::Borrowed(&msg.data[..]);
        let mut count = 0u64;
        for path in &self.paths {
            let r = wire::rewrite(&data, path, |_| {
                count += 1;
                Some(self.replacement.clone())
            });
            match r {
                Ok(Some(new)) => data = Cow::Owned(new),
                Ok(None) => {}
                Err(e) => return self.unparsable(msg, direction, &e),
            }
        }
        if count == 0 {
            return MessageAction::Continue;
        }
        self.redactions.add(&[direction], count as f64);
        MessageAction::Replace(data.into_owned())
    }

    fn unparsable(&self, msg: &Message, direction: &str, e: &wire::WireError) -> MessageAction {
        if self.on_unparsable == OnUnparsable::Reject {
            return MessageAction::reject(
                Code::InvalidArgument,
                format!(
                    "{direction} message {} is not a protobuf message the configured fields can be read from",
                    msg.index
                ),
            );
        }
        if !self.logged.replace(true) {
            log(
                Level::Debug,
                &format!(
                    "{direction} message {} of {} does not parse as protobuf ({e}); passed on unchanged \
                     (logged once per instance)",
                    msg.index, msg.method
                ),
            );
        }
        MessageAction::Continue
    }
}

impl Plugin for PiiRedact {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        if c.fields.is_empty() {
            return Err("config.fields is empty: nothing to redact".into());
        }
        let paths = c
            .fields
            .iter()
            .map(|f| f.parse::<Path>().map_err(|e| format!("config.fields: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let redactions = Counter::define(
            "pii_redactions",
            "Values replaced by pii-redact, by direction",
            &["direction"],
        )?;
        Ok(PiiRedact {
            paths: outermost(paths),
            replacement: c.replacement.into_bytes(),
            on_unparsable: c.on_unparsable,
            redactions,
            logged: Cell::new(false),
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::REQUEST_MESSAGES | Hooks::RESPONSE_MESSAGES
    }

    fn on_request_message(&self, msg: &Message) -> MessageAction {
        self.redact(msg, "request")
    }

    fn on_response_message(&self, msg: &Message) -> MessageAction {
        self.redact(msg, "response")
    }
}

export_plugin!(PiiRedact);
