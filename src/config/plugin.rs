//! The `wasm:` stage: a WebAssembly component plugin (see `docs/plugins.md`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use super::plugin_io::{CalloutConfig, StateConfig};
pub use super::size::ByteSize;

/// The most memory a plugin instance may be given (the host's pooling allocator reserves slots
/// of this size).
pub const MAX_MEMORY_LIMIT: u64 = 256 << 20;

/// The most instances all plugins together may keep (the host's pool holds twice this, so a
/// reload can build the new version while the old one finishes its calls).
pub const MAX_TOTAL_INSTANCES: u32 = 480;

/// `wasm`: one plugin stage, a component of the `synapsor:plugin/interceptor` world.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WasmConfig {
    /// The plugin's name, in logs, metrics and the UNAVAILABLE message of `on_error: deny`.
    pub name: String,
    /// The component file (`.wasm`); a relative path is taken from the working directory.
    pub path: PathBuf,
    /// Anything; handed to the plugin's `init` as JSON (`null` when absent).
    #[serde(default, skip_serializing_if = "serde_yaml::Value::is_null")]
    pub config: serde_yaml::Value,
    /// `reuse` (default): a bounded pool of instances, each recycled after `recycle_after`
    /// calls and after any error. `per_request`: a fresh instance for every hook call.
    #[serde(default)]
    pub isolation: Isolation,
    /// The most time one hook call may take (default `10ms`).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// The most linear memory an instance may have (default `16MiB`, at most `256MiB`).
    #[serde(default = "default_memory")]
    pub memory_limit: ByteSize,
    /// What a call gets when the plugin traps, times out or returns something invalid:
    /// `deny` (default: UNAVAILABLE naming the plugin) or `allow` (it goes on as if the plugin
    /// had let it through).
    #[serde(default)]
    pub on_error: OnError,
    /// The most instances alive at once (default 64); calls beyond it wait for one, up to
    /// `timeout`.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// With `reuse`, an instance is replaced after this many calls (default 10000).
    #[serde(default = "default_recycle_after")]
    pub recycle_after: u64,
    /// Reload the plugin when its file changes (default true). SIGHUP reloads every plugin.
    #[serde(default = "yes")]
    pub watch: bool,
    /// Call the plugin's `on-response` (default true). `false` saves that call's cost for a
    /// plugin that only decides on requests.
    #[serde(default = "yes")]
    pub on_response: bool,
    /// The largest gRPC message (after decompression) a message hook is shown: default 4 MiB
    /// (gRPC's own default receive limit) or a quarter of `memory_limit` if that is less; at
    /// most half of `memory_limit` (the message is copied into the instance's memory, and a
    /// replacement needs room too). See [`WasmConfig::max_message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<ByteSize>,
    /// A message over `max_message_size`: `reject` (default) ends the call with
    /// RESOURCE_EXHAUSTED; `pass` forwards it untouched without showing it to the plugin.
    #[serde(default)]
    pub on_oversize_message: MessagePolicy,
    /// The most bytes of partly received messages all the plugin's calls may hold at once
    /// (default 64 MiB, or four times the largest message if that is more; at least the largest
    /// message). A call whose message would go past it ends with RESOURCE_EXHAUSTED: what
    /// bounds the gateway's memory when many streams each send most of a large message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_buffer_limit: Option<ByteSize>,
    /// A message compressed with an encoding the gateway cannot read (it reads `gzip` and
    /// `deflate`): `reject` (default) ends the call with UNIMPLEMENTED, as a gRPC server does;
    /// `pass` forwards it untouched without showing it to the plugin.
    #[serde(default)]
    pub on_unknown_encoding: MessagePolicy,
    /// The upstream groups the plugin may call out to and the bounds on its callouts (none
    /// allowed when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callouts: Option<CalloutConfig>,
    /// The bounds and place of the plugin's key-value store (in the gateway's memory by
    /// default).
    #[serde(default)]
    pub state: StateConfig,
}

/// What happens to a message a plugin's message hook cannot be shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagePolicy {
    /// End the call with a status.
    #[default]
    Reject,
    /// Forward the message untouched; the plugin does not see it.
    Pass,
}

/// How plugin instances are shared between calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A pool of instances reused across calls.
    #[default]
    Reuse,
    /// A fresh instance for every hook call.
    PerRequest,
}

/// What a call gets when its plugin fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// UNAVAILABLE, naming the plugin.
    #[default]
    Deny,
    /// The call goes on unchanged.
    Allow,
}

fn default_timeout() -> Dur {
    Dur::millis(10)
}
fn default_memory() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_max_instances() -> u32 {
    64
}
fn default_recycle_after() -> u64 {
    10_000
}
fn yes() -> bool {
    true
}

impl WasmConfig {
    /// The most bytes of partly received messages the plugin's calls may hold together.
    pub fn message_buffer(&self) -> usize {
        let default = (64usize << 20).max(4 * self.max_message());
        self.message_buffer_limit.map_or(default, |m| m.0 as usize)
    }

    /// The largest message a message hook is shown, in bytes: `max_message_size`, or by default
    /// 4 MiB or a quarter of `memory_limit`, whichever is less.
    pub fn max_message(&self) -> usize {
        let default = (4 << 20).min(self.memory_limit.0 / 4);
        self.max_message_size.map_or(default, |m| m.0) as usize
    }

    /// The plugin's `config:` as the JSON text `init` receives.
    pub fn config_json(&self) -> Result<String, String> {
        let v: serde_json::Value = serde_yaml::from_value(self.config.clone())
            .map_err(|e| format!("config cannot be expressed as JSON: {e}"))?;
        serde_json::to_string(&v).map_err(|e| e.to_string())
    }

    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return bad("name", "use 1 to 64 letters, digits, '-', '_' or '.'");
        }
        if self.path.as_os_str().is_empty() {
            return bad("path", "must name a .wasm component file");
        }
        if self.timeout.0.is_zero() || self.timeout.0 > std::time::Duration::from_secs(10) {
            return bad("timeout", "must be more than 0 and at most 10s");
        }
        if self.memory_limit.0 < 64 << 10 || self.memory_limit.0 > MAX_MEMORY_LIMIT {
            return bad("memory_limit", "must be from 64KiB to 256MiB");
        }
        if let Some(m) = self.max_message_size {
            if m.0 == 0 || m.0 > self.memory_limit.0 / 2 {
                return bad(
                    "max_message_size",
                    "must be more than 0 and at most half of memory_limit (the message is \
                     copied into the plugin's memory, and a replacement needs room too)",
                );
            }
        }
        if self.message_buffer() < self.max_message() {
            return bad(
                "message_buffer_limit",
                "must be at least the largest message (max_message_size)",
            );
        }
        if self.max_instances == 0 || self.max_instances > MAX_TOTAL_INSTANCES {
            return bad("max_instances", "must be from 1 to 480");
        }
        if self.recycle_after == 0 {
            return bad("recycle_after", "must be at least 1");
        }
        if let Err(e) = self.config_json() {
            return bad("config", &e);
        }
        if let Some(c) = &self.callouts {
            c.validate()
                .map_err(|(f, m)| (format!("callouts.{f}"), m))?;
        }
        self.state
            .validate()
            .map_err(|(f, m)| (format!("state.{f}"), m))
    }
}
