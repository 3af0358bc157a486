//! The original Go synapsor format (`proxy:` → `setting:` / `proxy_list:` with upper-case keys),
//! mapped onto the native schema. The README has the table of what each key becomes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::duration::Dur;
use super::endpoint::EndpointSpec;
use super::model::{
    AdminConfig, Balance, Config, ListenerConfig, PoolConfig, PoolMode, UpstreamConfig,
};

/// The whole original file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// The one top-level key.
    pub proxy: SeedProxy,
}

/// `proxy:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProxy {
    /// `setting:`.
    #[serde(default)]
    pub setting: SeedSetting,
    /// `proxy_list:`.
    pub proxy_list: Vec<SeedEntry>,
}

/// `proxy.setting`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSetting {
    /// Address every proxy listens on.
    #[serde(rename = "LISTEN_PROXY_ADDR")]
    pub listen_addr: Option<IpAddr>,
}

/// One `proxy_list` entry.
#[allow(missing_docs)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    #[serde(rename = "PROXY_NAME")]
    pub name: String,
    #[serde(rename = "ENABLED")]
    pub enabled: Option<bool>,
    #[serde(rename = "POOL_ENABLED")]
    pub pool_enabled: Option<bool>,
    #[serde(rename = "DIAL_TIMEOUT")]
    pub dial_timeout: Option<Dur>,
    #[serde(rename = "BACKOFF_MAX_DELAY")]
    pub backoff_max_delay: Option<Dur>,
    #[serde(rename = "KEEPALIVE_TIME")]
    pub keepalive_time: Option<Dur>,
    #[serde(rename = "KEEPALIVE_TIMEOUT")]
    pub keepalive_timeout: Option<Dur>,
    #[serde(rename = "REQUEST_IDLE_TIME")]
    pub request_idle_time: Option<Dur>,
    #[serde(rename = "REQUEST_MAX_LIFE")]
    pub request_max_life: Option<Dur>,
    #[serde(rename = "REQUEST_TIMEOUT")]
    pub request_timeout: Option<Dur>,
    #[serde(rename = "POOL_MODEL")]
    pub pool_model: Option<SeedPoolModel>,
    #[serde(rename = "PROXY_MODEL")]
    pub proxy_model: Option<SeedProxyModel>,
    #[serde(rename = "GRPC_REQUEST_REUSABLE")]
    pub reusable: Option<bool>,
    #[serde(rename = "DEFAULT_GRPC_CONN_NUM")]
    pub conn_num: Option<usize>,
    #[serde(rename = "PROXY_PORT")]
    pub port: SeedPort,
    #[serde(rename = "GRPC_PROXY_ENDPOINTS")]
    pub endpoints: Vec<EndpointSpec>,
}

/// `POOL_MODEL`: 0 strict, 1 loose.
#[derive(Debug, Clone, Copy)]
pub struct SeedPoolModel(pub PoolMode);

impl<'de> Deserialize<'de> for SeedPoolModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(SeedPoolModel(PoolMode::Strict)),
            1 => Ok(SeedPoolModel(PoolMode::Loose)),
            n => Err(de::Error::custom(format!(
                "POOL_MODEL is {n}: use 0 (STRICT_MODE) or 1 (LOOSE_MODE)"
            ))),
        }
    }
}

/// `PROXY_MODEL`: `randomWeight` or `minConn`.
#[derive(Debug, Clone, Copy)]
pub struct SeedProxyModel(pub Balance);

impl<'de> Deserialize<'de> for SeedProxyModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "randomWeight" => Ok(SeedProxyModel(Balance::RandomWeight)),
            "minConn" => Ok(SeedProxyModel(Balance::LeastRequest)),
            other => Err(de::Error::custom(format!(
                "PROXY_MODEL is {other:?}: use randomWeight or minConn"
            ))),
        }
    }
}

/// `PROXY_PORT`: a port, written as a string (as the original did) or a number.
#[derive(Debug, Clone, Copy)]
pub struct SeedPort(pub u16);

impl<'de> Deserialize<'de> for SeedPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SeedPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (1-65535), as a number or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SeedPort, E> {
                u16::try_from(v)
                    .map(SeedPort)
                    .map_err(|_| E::custom(format!("port {v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SeedPort, E> {
                u16::try_from(v)
                    .map(SeedPort)
                    .map_err(|_| E::custom(format!("port {v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SeedPort, E> {
                v.trim()
                    .parse::<u16>()
                    .map(SeedPort)
                    .map_err(|_| E::custom(format!("invalid port {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl SeedEntry {
    /// The warning for entry `i` when it is switched off (`ENABLED` or `POOL_ENABLED` false)
    /// and so skipped.
    fn skipped(&self, i: usize) -> Option<(String, String)> {
        if self.enabled == Some(false) || self.pool_enabled == Some(false) {
            let key = if self.enabled == Some(false) {
                "ENABLED"
            } else {
                "POOL_ENABLED"
            };
            return Some((
                format!("proxy.proxy_list[{i}].{key}"),
                format!("{key} is false: entry {:?} skipped", self.name),
            ));
        }
        None
    }

    /// The entry's pool: its keys over the native defaults, `DEFAULT_GRPC_CONN_NUM` kept open
    /// (1 when unset), strict unless `POOL_MODEL` says loose.
    fn pool(&self) -> PoolConfig {
        let defaults = PoolConfig::default();
        let min = self.conn_num.unwrap_or(1);
        PoolConfig {
            mode: self.pool_model.map(|m| m.0).unwrap_or(PoolMode::Strict),
            min_connections: min,
            max_connections: defaults.max_connections.max(min),
            idle_timeout: self.request_idle_time.unwrap_or(defaults.idle_timeout),
            max_lifetime: self.request_max_life.unwrap_or(defaults.max_lifetime),
            reuse: self.reusable.unwrap_or(true),
            dial_timeout: self.dial_timeout.unwrap_or(defaults.dial_timeout),
            backoff_max_delay: self.backoff_max_delay.unwrap_or(defaults.backoff_max_delay),
            keepalive_time: self.keepalive_time.unwrap_or(defaults.keepalive_time),
            keepalive_timeout: self.keepalive_timeout.unwrap_or(defaults.keepalive_timeout),
            ..defaults
        }
    }
}

/// The listener of entry `name`: the native listener defaults, on `listen`, in front of the
/// upstream of the same name.
fn seed_listener(name: String, listen: SocketAddr) -> ListenerConfig {
    let defaults: ListenerConfig =
        serde_yaml::from_str(&format!("{{ name: x, listen: \"{listen}\", upstream: x }}"))
            .expect("listener defaults");
    ListenerConfig {
        name: name.clone(),
        upstream: Some(name),
        ..defaults
    }
}

impl SeedFile {
    /// Maps the original file onto the native schema; returns the config, warnings for keys
    /// that have no effect (as the key's path in the original file and a message), and for each
    /// native listener/upstream the `proxy_list` index it came from.
    pub fn into_native(self) -> (Config, Vec<(String, String)>, Vec<usize>) {
        let mut warnings = Vec::new();
        let mut origin = Vec::new();
        let addr = self
            .proxy
            .setting
            .listen_addr
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut listeners = Vec::new();
        let mut upstreams = Vec::new();
        for (i, e) in self.proxy.proxy_list.into_iter().enumerate() {
            if let Some(skipped) = e.skipped(i) {
                warnings.push(skipped);
                continue;
            }
            if e.pool_enabled.is_some() {
                warnings.push((
                    format!("proxy.proxy_list[{i}].POOL_ENABLED"),
                    "has no effect: synapsor always pools (set GRPC_REQUEST_REUSABLE: false for \
                     a connection per call)"
                        .to_string(),
                ));
            }
            let pool = e.pool();
            origin.push(i);
            upstreams.push(UpstreamConfig {
                name: e.name.clone(),
                balance: e.proxy_model.map(|m| m.0).unwrap_or(Balance::RandomWeight),
                endpoints: e.endpoints,
                request_timeout: e.request_timeout.unwrap_or(Dur::secs(30)),
                pool,
                health_check: None,
                outlier_detection: None,
                tls: None,
                slow_start: Dur::default(),
                resolve_interval: Dur::secs(30),
            });
            listeners.push(seed_listener(e.name, SocketAddr::new(addr, e.port.0)));
        }
        let config = Config {
            runtime: Default::default(),
            admin: AdminConfig::default(),
            listeners,
            upstreams,
            reload: Default::default(),
        };
        (config, warnings, origin)
    }

    /// The path in the original file of a native field path (for error locations).
    pub fn original_path(native: &str, origin: &[usize]) -> String {
        const KEYS: [(&str, &str); 7] = [
            ("listen", "PROXY_PORT"),
            ("endpoints", "GRPC_PROXY_ENDPOINTS"),
            ("pool.min_connections", "DEFAULT_GRPC_CONN_NUM"),
            ("pool.dial_timeout", "DIAL_TIMEOUT"),
            ("pool.keepalive_timeout", "KEEPALIVE_TIMEOUT"),
            ("pool.keepalive_time", "KEEPALIVE_TIME"),
            ("pool.backoff_max_delay", "BACKOFF_MAX_DELAY"),
        ];
        for prefix in ["listeners[", "upstreams["] {
            let Some(rest) = native.strip_prefix(prefix) else {
                continue;
            };
            let Some((n, field)) = rest.split_once(']') else {
                continue;
            };
            let Some(&i) = n.parse::<usize>().ok().and_then(|n| origin.get(n)) else {
                continue;
            };
            let field = field.trim_start_matches('.');
            let entry = format!("proxy.proxy_list[{i}]");
            for (native_key, seed_key) in KEYS {
                if let Some(tail) = field.strip_prefix(native_key) {
                    return format!("{entry}.{seed_key}{tail}");
                }
            }
            return entry;
        }
        "proxy".to_string()
    }
}
