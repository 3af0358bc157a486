//! `token-cache`: attaches an upstream credential, `authorization: Bearer <token>`, to every
//! call, with a token from a token service kept in the plugin's shared state and refreshed by
//! exactly one instance at a time (a lock taken with compare-and-swap). See README.md.
//!
//! ```yaml
//! - wasm:
//!     name: token-cache
//!     path: plugins/build/token_cache.wasm
//!     callouts: { groups: [tokens], timeout: 200ms }
//!     state: { max_entries: 100 }
//!     config: { group: tokens, audience: billing, refresh_before_ms: 5000 }
//! ```
//!
//! Metric: `synapsor_wasm_token_cache_calls_total{token=cached|refreshed|stale|waited|direct|none}`.

mod token;

use std::time::Duration;

use serde::Deserialize;
use synapsor_plugin_sdk::{
    export_plugin, log, now_unix_nanos, parse_config, state, Call, Code, Counter, HeaderOp, Level,
    Plugin, RequestAction, RequestInfo,
};
use token::Token;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The upstream group serving the token service (in `callouts.groups`).
    group: String,
    /// The Issue method's path.
    method: String,
    /// Whom the token is for (`IssueRequest.audience`); also names the state keys.
    audience: String,
    /// The metadata entry the credential goes in.
    header: String,
    /// Refresh a token this long before it expires, in milliseconds.
    refresh_before_ms: u64,
    /// How long the refresh lock holds if its owner never releases it, in milliseconds.
    lock_ttl_ms: u64,
    /// How long a call with no valid token waits for another instance's refresh, in ms.
    wait_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group: "tokens".into(),
            method: "/synapsor.test.v1.Tokens/Issue".into(),
            audience: String::new(),
            header: "authorization".into(),
            refresh_before_ms: 5000,
            lock_ttl_ms: 1000,
            wait_ms: 50,
        }
    }
}

struct TokenCache {
    config: Config,
    token_key: String,
    lock_key: String,
    calls: Counter,
}

fn now_ms() -> u64 {
    now_unix_nanos() / 1_000_000
}

impl Plugin for TokenCache {
    fn init(config: &str) -> Result<Self, String> {
        let mut config: Config = parse_config(config)?;
        if config.group.is_empty() || !config.method.starts_with('/') {
            return Err("group must name an upstream group and method be a path".into());
        }
        if config.audience.len() > 240 || config.header.is_empty() || config.lock_ttl_ms == 0 {
            return Err("audience is at most 240 bytes, header not empty, lock_ttl_ms > 0".into());
        }
        config.header = config.header.to_ascii_lowercase();
        let calls = Counter::define(
            "token_cache_calls",
            "Calls by where their token came from (none: refused)",
            &["token"],
        )?;
        Ok(TokenCache {
            token_key: format!("token:{}", config.audience),
            lock_key: format!("token-lock:{}", config.audience),
            config,
            calls,
        })
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        let now = now_ms();
        let cached = match state::get(&self.token_key) {
            Ok(v) => v.as_deref().and_then(Token::decode),
            Err(e) => {
                log(Level::Debug, &format!("token cache not read: {e}"));
                return self.direct();
            }
        };
        match cached {
            Some(t) if t.valid_at(now, self.config.refresh_before_ms) => self.attach(&t, "cached"),
            old => self.refresh(req.call_id, old, now),
        }
    }
}

impl TokenCache {
    /// The call goes on with the token, counted under `source`.
    fn attach(&self, t: &Token, source: &str) -> RequestAction {
        self.calls.inc(&[source]);
        let value = format!("Bearer {}", t.value);
        RequestAction::Continue(vec![HeaderOp::set(&self.config.header, value)])
    }

    /// The call ends with UNAVAILABLE: it has no valid token.
    fn refuse(&self, why: &str) -> RequestAction {
        self.calls.inc(&["none"]);
        let audience = &self.config.audience;
        let msg = format!("no credential for audience {audience:?}: {why}");
        RequestAction::reject(Code::Unavailable, msg)
    }

    /// The token is missing or near expiry: refresh it if this call wins the lock, else use
    /// the old one while it is valid, else wait for the winner's.
    fn refresh(&self, call_id: u64, old: Option<Token>, now: u64) -> RequestAction {
        let old = old.filter(|t| t.valid_at(now, 0));
        let owner = format!("{:x}-{call_id:x}", now_unix_nanos());
        let ttl = Duration::from_millis(self.config.lock_ttl_ms);
        let lock = &self.lock_key;
        match state::compare_and_swap(lock, None, Some(owner.as_bytes()), Some(ttl)) {
            Ok(true) => {
                let fresh = self.issue();
                // Release only our own lock: if it expired and another instance took it, the
                // swap finds another owner and changes nothing.
                let _ = state::compare_and_swap(lock, Some(owner.as_bytes()), None, None);
                match (fresh, old) {
                    (Ok(t), _) => self.attach(&t, "refreshed"),
                    (Err(_), Some(t)) => self.attach(&t, "stale"),
                    (Err(e), None) => self.refuse(&e),
                }
            }
            Ok(false) => match old {
                Some(t) => self.attach(&t, "stale"),
                None => self.wait(),
            },
            Err(e) => {
                log(Level::Debug, &format!("refresh lock not taken: {e}"));
                match old {
                    Some(t) => self.attach(&t, "stale"),
                    None => self.direct(),
                }
            }
        }
    }

    /// Another instance is refreshing and there is no valid token: look again every 5 ms for
    /// up to `wait_ms`.
    fn wait(&self) -> RequestAction {
        let until = now_ms().saturating_add(self.config.wait_ms);
        while now_ms() < until {
            std::thread::sleep(Duration::from_millis(5));
            if let Ok(Some(v)) = state::get(&self.token_key) {
                match Token::decode(&v) {
                    Some(t) if t.valid_at(now_ms(), 0) => return self.attach(&t, "waited"),
                    _ => {}
                }
            }
        }
        self.refuse("another instance is refreshing it")
    }

    /// The shared state cannot be used: get a token for this call alone.
    fn direct(&self) -> RequestAction {
        match self.issue() {
            Ok(t) => self.attach(&t, "direct"),
            Err(e) => self.refuse(&e),
        }
    }

    /// Asks the token service for a new token and stores it (best effort) for its lifetime.
    fn issue(&self) -> Result<Token, String> {
        let answer = Call::new(&self.config.group, &self.config.method)
            .message(token::issue_request(&self.config.audience))
            .send()
            .map_err(|e| format!("token service: {e}"))?;
        let (t, lifetime) = token::issue_response(&answer.message, now_ms())?;
        if lifetime > 0 {
            let ttl = Some(Duration::from_millis(lifetime));
            if let Err(e) = state::set(&self.token_key, &t.encode(), ttl) {
                log(Level::Debug, &format!("token not cached: {e}"));
            }
        }
        Ok(t)
    }
}

export_plugin!(TokenCache);
