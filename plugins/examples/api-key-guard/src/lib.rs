//! `api-key-guard`: admits a call only when its `x-api-key` (or the configured header) is one of
//! the configured keys; forwards the key's owner as `x-principal` and never forwards the key.
//!
//! ```yaml
//! - wasm: { name: api-key-guard, path: plugins/build/api_key_guard.wasm,
//!           config: { header: x-api-key, keys: { "k-123": alice, "k-456": bob } } }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use synapsor_plugin_sdk::{
    export_plugin, parse_config, Code, HeaderOp, Plugin, RequestAction, RequestInfo,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The metadata entry that carries the key.
    header: String,
    /// Key → the name of its owner.
    keys: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "x-api-key".into(),
            keys: BTreeMap::new(),
        }
    }
}

struct ApiKeyGuard(Config);

impl Plugin for ApiKeyGuard {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        if c.keys.is_empty() {
            return Err("config.keys is empty: no call could pass".into());
        }
        Ok(ApiKeyGuard(c))
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        let Some(key) = req.header(&self.0.header) else {
            return RequestAction::reject(
                Code::Unauthenticated,
                format!("missing {}", self.0.header),
            );
        };
        match self.0.keys.get(key) {
            Some(owner) => RequestAction::Continue(vec![
                HeaderOp::remove(self.0.header.clone()),
                HeaderOp::set("x-principal", owner.clone()),
            ]),
            None => RequestAction::reject(Code::Unauthenticated, "unknown API key"),
        }
    }
}

export_plugin!(ApiKeyGuard);
