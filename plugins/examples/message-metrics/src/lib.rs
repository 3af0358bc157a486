//! `message-metrics`: measures the gRPC messages of every call, in both directions, on the
//! gateway's `/metrics`:
//!
//! * `synapsor_wasm_message_bytes{plugin, method, direction}`: a histogram of message sizes in
//!   bytes (decompressed), with buckets 64, 256, 1Ki, 4Ki, 16Ki, 64Ki, 256Ki, 1Mi and 4Mi;
//! * `synapsor_wasm_messages_total{plugin, method, direction}`: the messages counted.
//!
//! `direction` is `request` (client to upstream) or `response`. Every message is passed on
//! unchanged. It takes no config.
//!
//! ```yaml
//! - wasm: { name: message-metrics, path: plugins/build/message_metrics.wasm }
//! ```
//!
//! Each distinct method makes two series per direction; the gateway keeps at most 1,000 series
//! per plugin (and drops updates past that), so this suits services with a bounded set of
//! methods.

use serde::Deserialize;
use synapsor_plugin_sdk::{
    export_plugin, parse_config, Counter, Histogram, Hooks, Message, MessageAction, Plugin,
};

/// Bucket bounds, in bytes.
const BUCKETS: [f64; 9] = [
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {}

struct MessageMetrics {
    sizes: Histogram,
    count: Counter,
}

impl MessageMetrics {
    fn record(&self, msg: &Message, direction: &str) -> MessageAction {
        let labels = [msg.method.as_str(), direction];
        self.sizes.observe(&labels, msg.data.len() as f64);
        self.count.inc(&labels);
        MessageAction::Continue
    }
}

impl Plugin for MessageMetrics {
    fn init(config: &str) -> Result<Self, String> {
        let _: Config = parse_config(config)?;
        Ok(MessageMetrics {
            sizes: Histogram::define(
                "message_bytes",
                "Sizes of gRPC messages in bytes, by method and direction",
                &["method", "direction"],
                &BUCKETS,
            )?,
            count: Counter::define(
                "messages",
                "gRPC messages, by method and direction",
                &["method", "direction"],
            )?,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::REQUEST_MESSAGES | Hooks::RESPONSE_MESSAGES
    }

    fn on_request_message(&self, msg: &Message) -> MessageAction {
        self.record(msg, "request")
    }

    fn on_response_message(&self, msg: &Message) -> MessageAction {
        self.record(msg, "response")
    }
}

export_plugin!(MessageMetrics);
