//! `ext-authz`: asks an external authorization service about every call, as Envoy's
//! `ext_authz` filter does, and caches its decisions in the plugin's shared state.
//!
//! For each call it sends `CheckRequest { method, principal, headers }` (the call's method,
//! the principal the gateway knows, and the metadata entries named in `headers`) to `method`
//! on the upstream group `group`. An OK answer lets the call through with the
//! `CheckResponse`'s headers set on it; a status other than OK ends the call with that status
//! and message. Both decisions are kept for `cache_ttl_ms` under a hash of the method,
//! principal and forwarded headers. When the service cannot be asked (timeout, unavailable,
//! over the callout bounds, a malformed answer) `on_error` decides: `deny` ends the call with
//! UNAVAILABLE `authorization service unavailable (<kind>)` (`timeout`, `unavailable`, …; the
//! detail goes to the gateway's log), `allow` lets it through; neither
//! is cached. A state error (full, Redis down) only costs the cache.
//!
//! ```yaml
//! - wasm:
//!     name: authz
//!     path: plugins/build/ext_authz.wasm
//!     callouts: { groups: [authz], timeout: 200ms }
//!     state: { max_entries: 10000, max_bytes: 16MiB, max_value_size: 64KiB }
//!     config: { group: authz, method: /synapsor.test.v1.Authz/Check,
//!               headers: [authorization], cache_ttl_ms: 5000, on_error: deny }
//! ```
//!
//! Metric: `synapsor_wasm_ext_authz_decisions_total{result=allow|deny|error,cache=hit|miss}`.

mod decision;

use std::time::Duration;

use decision::Decision;
use serde::Deserialize;
use synapsor_plugin_sdk::{
    export_plugin, log, parse_config, state, Call, CalloutError, Code, Counter, Level, Plugin,
    RequestAction, RequestInfo,
};

/// What to do when the authorization service cannot be asked.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnError {
    /// End the call with UNAVAILABLE.
    Deny,
    /// Let the call through.
    Allow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The upstream group serving the authorization service (in `callouts.groups`).
    group: String,
    /// The Check method's path.
    method: String,
    /// The metadata entries forwarded in `CheckRequest.headers` (every value of each).
    headers: Vec<String>,
    /// How long a decision is kept, in milliseconds; 0 keeps none.
    cache_ttl_ms: u64,
    /// What a call gets when the service cannot be asked.
    on_error: OnError,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group: "authz".into(),
            method: "/synapsor.test.v1.Authz/Check".into(),
            headers: vec!["authorization".into()],
            cache_ttl_ms: 5000,
            on_error: OnError::Deny,
        }
    }
}

struct ExtAuthz {
    config: Config,
    decisions: Counter,
}

impl Plugin for ExtAuthz {
    fn init(config: &str) -> Result<Self, String> {
        let mut config: Config = parse_config(config)?;
        if config.group.is_empty() {
            return Err("group must name an upstream group".into());
        }
        if !config.method.starts_with('/') {
            return Err("method must be a path: /package.Service/Method".into());
        }
        for h in &mut config.headers {
            *h = h.to_ascii_lowercase();
        }
        let decisions = Counter::define(
            "ext_authz_decisions",
            "Authorization decisions, by result and whether the cache answered",
            &["result", "cache"],
        )?;
        Ok(ExtAuthz { config, decisions })
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        let headers = self.forwarded(req);
        let principal = req.principal.as_deref();
        let key = (self.config.cache_ttl_ms > 0)
            .then(|| decision::cache_key(&req.method, principal, &headers));
        if let Some(d) = key.as_deref().and_then(cached) {
            self.decisions.inc(&[d.result(), "hit"]);
            return d.action();
        }
        match self.ask(&req.method, principal, &headers) {
            Ok(d) => {
                if let Some(key) = &key {
                    self.remember(key, &d);
                }
                self.decisions.inc(&[d.result(), "miss"]);
                d.action()
            }
            Err((kind, detail)) => {
                self.decisions.inc(&["error", "miss"]);
                // The detail (addresses, OS errors) goes to the gateway's log, not to clients.
                log(Level::Warn, &format!("authorization service: {detail}"));
                match self.config.on_error {
                    OnError::Deny => RequestAction::reject(
                        Code::Unavailable,
                        format!("authorization service unavailable ({kind})"),
                    ),
                    OnError::Allow => RequestAction::proceed(),
                }
            }
        }
    }
}

impl ExtAuthz {
    /// The configured metadata entries of the call, every value, in the configured order.
    fn forwarded(&self, req: &RequestInfo) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in &self.config.headers {
            for h in req.metadata.iter().filter(|h| &h.name == name) {
                out.push((h.name.clone(), h.value.clone()));
            }
        }
        out
    }

    /// Asks the service: its decision, or why it could not be asked.
    fn ask(
        &self,
        method: &str,
        principal: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<Decision, (&'static str, String)> {
        let answer = Call::new(&self.config.group, &self.config.method)
            .message(decision::check_request(method, principal, headers))
            .send();
        match answer {
            Ok(resp) => decision::check_response(&resp.message)
                .map(Decision::Allow)
                .map_err(|e| ("invalid", format!("malformed CheckResponse: {e}"))),
            Err(CalloutError::Status(st)) => Ok(Decision::Deny {
                code: st.to_reject().code,
                message: st.message,
            }),
            Err(e) => Err((e.kind(), e.to_string())),
        }
    }

    /// Keeps `d` for `cache_ttl_ms`; a state error is logged and otherwise ignored.
    fn remember(&self, key: &str, d: &Decision) {
        let ttl = Duration::from_millis(self.config.cache_ttl_ms);
        if let Err(e) = state::set(key, &d.encode(), Some(ttl)) {
            log(Level::Debug, &format!("decision not cached: {e}"));
        }
    }
}

/// The decision cached under `key`, if any (a state error counts as none).
fn cached(key: &str) -> Option<Decision> {
    match state::get(key) {
        Ok(v) => Decision::decode(&v?),
        Err(e) => {
            log(Level::Debug, &format!("decision cache not read: {e}"));
            None
        }
    }
}

export_plugin!(ExtAuthz);
