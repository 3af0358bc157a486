//! `header-rewrite`: sets, appends and removes request metadata before a call is forwarded, and
//! sets trailers on its answer.
//!
//! ```yaml
//! - wasm: { name: header-rewrite, path: plugins/build/header_rewrite.wasm,
//!           config: { set: { x-env: prod }, append: { x-via: synapsor },
//!                     remove: [x-debug], trailers: { x-served-by: synapsor } } }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use synapsor_plugin_sdk::{
    export_plugin, parse_config, HeaderOp, Plugin, RequestAction, RequestInfo, ResponseAction,
    ResponseInfo,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Request metadata to set (replacing what the client sent).
    set: BTreeMap<String, String>,
    /// Request metadata to add.
    append: BTreeMap<String, String>,
    /// Request metadata to drop.
    remove: Vec<String>,
    /// Trailers to set on the answer.
    trailers: BTreeMap<String, String>,
}

struct HeaderRewrite {
    request: Vec<HeaderOp>,
    response: Vec<HeaderOp>,
}

impl Plugin for HeaderRewrite {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        let mut request: Vec<HeaderOp> = c.remove.into_iter().map(HeaderOp::remove).collect();
        request.extend(c.set.into_iter().map(|(k, v)| HeaderOp::set(k, v)));
        request.extend(c.append.into_iter().map(|(k, v)| HeaderOp::append(k, v)));
        let response = c
            .trailers
            .into_iter()
            .map(|(k, v)| HeaderOp::set(k, v))
            .collect();
        Ok(HeaderRewrite { request, response })
    }

    fn on_request(&self, _req: &RequestInfo) -> RequestAction {
        RequestAction::Continue(self.request.clone())
    }

    fn on_response(&self, _resp: &ResponseInfo) -> ResponseAction {
        ResponseAction::Continue(self.response.clone())
    }
}

export_plugin!(HeaderRewrite);
