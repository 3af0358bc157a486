//! The `interceptors:` list of a listener: built-in stages, in execution order.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::duration::Dur;

/// One stage of a listener's pipeline. YAML: `- rate_limit: { … }`, `- concurrency_limit: { … }`
/// (a map with exactly one key, the stage's kind).
#[derive(Clone, Debug)]
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
                f.write_str("a stage: a map with one key, rate_limit or concurrency_limit")
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
#[derive(Clone, Debug, Deserialize, Serialize)]
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
}

/// `concurrency_limit`: at most `max` calls in flight per key; a stream holds its slot until it
/// ends.
#[derive(Clone, Debug, Deserialize, Serialize)]
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

/// `api_key`: the call must carry a known key in `header`; the key's principal is forwarded.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The metadata entry holding the key (default `x-api-key`).
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Keys written in the config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ApiKeyEntry>,
    /// A YAML file holding a list of keys (same fields as `keys`), re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<std::path::PathBuf>,
    /// An environment variable holding `key=principal` pairs separated by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_env: Option<String>,
    /// The metadata entry the principal is forwarded in (default `x-principal`); a value the
    /// client sent in it is replaced.
    #[serde(default = "default_principal_header")]
    pub principal_header: String,
    /// Forward the key itself upstream (default `false`: the key header is removed).
    #[serde(default)]
    pub forward: bool,
}

/// One API key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The secret.
    pub key: String,
    /// Who it belongs to.
    pub principal: String,
    /// Method patterns this principal may call; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// `metrics`: Prometheus counters and a histogram per method, served on the admin `/metrics`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most distinct methods labelled (over all listeners); further ones count as `other`.
    #[serde(default = "default_max_methods")]
    pub max_methods: usize,
}

fn default_max_methods() -> usize {
    1000
}

/// `jwt`: a signed bearer token in `header`, checked against one key source and one algorithm.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The metadata entry carrying the token (`Bearer <token>` or the bare token).
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// `HS256`, `RS256` or `ES256`; tokens signed otherwise (or with `none`) are refused.
    #[serde(default = "default_jwt_alg")]
    pub algorithm: String,
    /// HS256: an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// HS256: a file holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<std::path::PathBuf>,
    /// RS256/ES256: a PEM public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<std::path::PathBuf>,
    /// RS256/ES256: a JWKS file (keys picked by `kid`), re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Required `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s).
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Claims that must be present (`exp` always is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<String>,
    /// Claims copied into upstream headers: `{ claim: header }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub claims_to_headers: std::collections::BTreeMap<String, String>,
    /// The claim that names the principal (default `sub`).
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The metadata entry the principal is forwarded in (default `x-principal`).
    #[serde(default = "default_principal_header")]
    pub principal_header: String,
    /// Forward the token itself (default `false`: the header is removed).
    #[serde(default)]
    pub forward: bool,
}

fn default_jwt_header() -> String {
    "authorization".into()
}
fn default_jwt_alg() -> String {
    "HS256".into()
}
fn default_leeway() -> Dur {
    Dur::secs(30)
}
fn default_principal_claim() -> String {
    "sub".into()
}

/// `access_log`: one line per finished call.
#[derive(Clone, Debug, Deserialize, Serialize)]
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

/// `access`: deny rules, then allow rules, then the default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Calls matching any of these are allowed (unless a deny rule matched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AccessRule>,
    /// Calls matching any of these get PERMISSION_DENIED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<AccessRule>,
    /// What a call matching no rule gets (default `deny`).
    #[serde(default)]
    pub default: AccessDefault,
}

/// One rule: it matches when every list it has matches (an absent list matches everything).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Method patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Peer addresses or CIDR blocks (`10.0.0.0/8`, `::1`, `192.168.1.7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Principals set by an earlier auth stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
}

/// The `access` default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessDefault {
    /// Calls matching no rule are allowed.
    Allow,
    /// Calls matching no rule get PERMISSION_DENIED.
    #[default]
    Deny,
}

/// An IP block: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad =
            || format!("invalid peer {s:?}: write an address or a CIDR block like 10.0.0.0/8");
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |x: IpAddr| -> u128 {
            match x {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let shift = 128 - u32::from(self.prefix);
        (bits(ip) >> shift) == (bits(self.addr) >> shift)
    }
}

fn default_key_header() -> String {
    "x-api-key".into()
}
fn default_principal_header() -> String {
    "x-principal".into()
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
