//! The `interceptors:` list of a listener: built-in stages, in execution order.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use super::auth::{
    AccessConfig, AccessDefault, AccessRule, ApiKeyConfig, ApiKeyEntry, Cidr, JwtConfig,
};
use super::duration::Dur;
use super::plugin::WasmConfig;

/// One stage of a listener's pipeline. YAML: `- rate_limit: { … }`, `- concurrency_limit: { … }`
/// (a map with exactly one key, the stage's kind).
#[derive(Clone, Debug, PartialEq)]
pub enum StageConfig {
    /// Token-bucket rate limiting (governor's GCRA).
    RateLimit(RateLimitConfig),
    /// A cap on calls in flight.
    ConcurrencyLimit(ConcurrencyLimitConfig),
    /// API-key authentication.
    ApiKey(ApiKeyConfig),
    /// Allow and deny rules by method, peer address and principal.
    Access(AccessConfig),
    /// Prometheus metrics of the calls that reach this stage.
    Metrics(MetricsConfig),
    /// One line per finished call.
    AccessLog(AccessLogConfig),
    /// JWT bearer-token authentication.
    Jwt(JwtConfig),
    /// A WebAssembly component plugin.
    Wasm(WasmConfig),
}

/// The stage kinds, as written in YAML.
const KINDS: &[&str] = &[
    "rate_limit",
    "concurrency_limit",
    "api_key",
    "access",
    "metrics",
    "access_log",
    "jwt",
    "wasm",
];

impl StageConfig {
    /// The stage's kind as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::RateLimit(_) => "rate_limit",
            StageConfig::ConcurrencyLimit(_) => "concurrency_limit",
            StageConfig::ApiKey(_) => "api_key",
            StageConfig::Access(_) => "access",
            StageConfig::Metrics(_) => "metrics",
            StageConfig::AccessLog(_) => "access_log",
            StageConfig::Jwt(_) => "jwt",
            StageConfig::Wasm(_) => "wasm",
        }
    }
}

impl Serialize for StageConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            StageConfig::RateLimit(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::ConcurrencyLimit(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::ApiKey(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::Access(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::Metrics(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::AccessLog(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::Jwt(c) => m.serialize_entry(self.kind(), c)?,
            StageConfig::Wasm(c) => m.serialize_entry(self.kind(), c)?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for StageConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StageConfig, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StageConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a stage: a map with one key, the stage's kind")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<StageConfig, A::Error> {
                let kind: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let stage = match kind.as_str() {
                    "rate_limit" => StageConfig::RateLimit(map.next_value()?),
                    "concurrency_limit" => StageConfig::ConcurrencyLimit(map.next_value()?),
                    "api_key" => StageConfig::ApiKey(map.next_value()?),
                    "access" => StageConfig::Access(map.next_value()?),
                    "metrics" => StageConfig::Metrics(map.next_value()?),
                    "access_log" => StageConfig::AccessLog(map.next_value()?),
                    "jwt" => StageConfig::Jwt(map.next_value()?),
                    "wasm" => StageConfig::Wasm(map.next_value()?),
                    other => return Err(de::Error::unknown_variant(other, KINDS)),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "one stage per list item: write each stage as its own `- kind: {…}`",
                    ));
                }
                Ok(stage)
            }
        }
        d.deserialize_map(V)
    }
}

/// `rate_limit`: at most `rate` calls per `per`, with bursts of up to `burst`, per key.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls allowed per `per` (at least 1).
    pub rate: u32,
    /// The period of `rate` (default `1s`).
    #[serde(default = "one_second")]
    pub per: Dur,
    /// Calls allowed at once after a quiet spell (default: `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What a bucket belongs to (default `global`).
    #[serde(default)]
    pub key: KeySpec,
    /// Method patterns the limit applies to (`/pkg.Svc/Method`, `/pkg.Svc/*`, `*`); all when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Most keys tracked; idle keys are evicted first, and past it new keys share one bucket.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// For `metadata:NAME` keys: what a call without that metadata gets.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// Buckets shared with other replicas (in Redis); in this process when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<super::limit_backend::LimitBackend>,
    /// With `backend`: what a call gets when the store fails (default `local`).
    #[serde(default)]
    pub on_backend_error: super::limit_backend::OnBackendError,
}

/// `concurrency_limit`: at most `max` calls in flight per key; a stream holds its slot until it
/// ends.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitConfig {
    /// Calls in flight allowed per key (at least 1).
    pub max: usize,
    /// What the count belongs to (default `global`).
    #[serde(default)]
    pub key: KeySpec,
    /// Method patterns the limit applies to; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Most keys tracked; past it new keys share one count.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// For `metadata:NAME` keys: what a call without that metadata gets.
    #[serde(default)]
    pub missing_key: MissingKey,
}

/// `metrics`: Prometheus counters and a histogram per method, served on the admin `/metrics`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most distinct methods labelled (over all listeners); further ones count as `other`.
    #[serde(default = "default_max_methods")]
    pub max_methods: usize,
}

fn default_max_methods() -> usize {
    1000
}

/// `access_log`: one line per finished call.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `text` (key=value) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// `stdout` or a file path (appended to).
    #[serde(default = "default_log_output")]
    pub output: String,
    /// Share of calls logged, from 0 to 1 (default 1: every call).
    #[serde(default = "default_sample")]
    pub sample: f64,
}

/// Access-log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `key=value` pairs.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_log_output() -> String {
    "stdout".into()
}
fn default_sample() -> f64 {
    1.0
}

fn one_second() -> Dur {
    Dur::secs(1)
}
fn default_max_keys() -> usize {
    10_000
}

/// What a limit is kept per.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeySpec {
    /// One bucket for every call.
    #[default]
    Global,
    /// A bucket per client IP address.
    PeerIp,
    /// A bucket per method path.
    Method,
    /// A bucket per value of this metadata entry.
    Metadata(String),
}

impl KeySpec {
    /// Parses `global`, `peer_ip`, `method` or `metadata:NAME`.
    pub fn parse(s: &str) -> Result<KeySpec, String> {
        match s {
            "global" => Ok(KeySpec::Global),
            "peer_ip" => Ok(KeySpec::PeerIp),
            "method" => Ok(KeySpec::Method),
            _ => match s.strip_prefix("metadata:") {
                Some(name)
                    if !name.is_empty()
                        && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                        && !name.bytes().any(|b| b.is_ascii_uppercase()) =>
                {
                    Ok(KeySpec::Metadata(name.to_string()))
                }
                _ => Err(format!(
                    "invalid key {s:?}: use global, peer_ip, method or metadata:NAME (lower case)"
                )),
            },
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Global => f.write_str("global"),
            KeySpec::PeerIp => f.write_str("peer_ip"),
            KeySpec::Method => f.write_str("method"),
            KeySpec::Metadata(n) => write!(f, "metadata:{n}"),
        }
    }
}

impl Serialize for KeySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeySpec, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("global, peer_ip, method or metadata:NAME")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySpec, E> {
                KeySpec::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// What a call without the key's metadata gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingKey {
    /// It shares one bucket with the other calls that lack it.
    #[default]
    Shared,
    /// It is rejected with UNAUTHENTICATED.
    Reject,
}

/// Checks a method pattern: `*`, `/pkg.Svc/*`, or an exact `/pkg.Svc/Method`.
pub fn check_method_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let ok = p.starts_with('/')
        && match p.strip_suffix('*') {
            Some(prefix) => prefix.ends_with('/') && !prefix.contains('*'),
            None => !p.contains('*') && p.len() > 1,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid method pattern {p:?}: use /pkg.Service/Method, /pkg.Service/* or *"
        ))
    }
}
