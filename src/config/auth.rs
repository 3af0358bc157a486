//! Configuration of the authentication and access stages: `api_key`, `jwt` and `access`.

use serde::{Deserialize, Serialize};

use super::duration::Dur;

/// `api_key`: the call must carry a known key in `header`; the key's principal is forwarded.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
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

/// `jwt`: a signed bearer token in `header`, checked against one key source and one algorithm.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
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

/// `access`: deny rules, then allow rules, then the default.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
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
