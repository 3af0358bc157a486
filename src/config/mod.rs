//! Configuration: the serde model, the original-format mapping, loading with file/line/field
//! errors, and validation.
//!
//! [`load`] reads a file, detects its format (a top-level `proxy:` key means the original Go
//! synapsor format), deserializes it with `deny_unknown_fields`, and validates it. Every error is
//! a [`ConfigError`] naming the file, the line and column, and the field path.

mod auth;
mod duration;
mod endpoint;
mod health;
mod limit_backend;
mod locate;
mod model;
mod outlier;
mod plugin;
mod plugin_io;
mod seed;
mod size;
mod stage;
mod tls;
mod validate;
mod validate_upstream;

use std::fmt;
use std::path::{Path, PathBuf};

pub use duration::{parse_duration, Dur};
pub use endpoint::{EndpointSpec, MAX_WEIGHT};
pub use health::{HealthCheckConfig, HealthCheckKind};
pub use limit_backend::{LimitBackend, OnBackendError};
pub use model::{
    AdminConfig, Balance, Config, ListenerConfig, MetadataMatch, PoolConfig, PoolMode,
    ReloadConfig, RouteConfig, UpstreamConfig,
};
pub use outlier::OutlierConfig;
pub use plugin::{
    ByteSize, Isolation, MessagePolicy, OnError, WasmConfig, MAX_MEMORY_LIMIT, MAX_TOTAL_INSTANCES,
};
pub use plugin_io::{CalloutConfig, OnRedisError, StateConfig, StateRedis};
pub use stage::{
    check_method_pattern, AccessConfig, AccessDefault, AccessLogConfig, AccessRule, ApiKeyConfig,
    ApiKeyEntry, Cidr, ConcurrencyLimitConfig, JwtConfig, KeySpec, LogFormat, MetricsConfig,
    MissingKey, RateLimitConfig, StageConfig,
};
pub use tls::{ListenerTlsConfig, UpstreamTlsConfig};
pub use validate::validate_keys;

/// A configuration error: where it is, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>` for text parsed directly).
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    /// Field path such as `upstreams[0].pool.mode`; empty for the document itself.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded, validated configuration and the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration, in the native schema.
    pub config: Config,
    /// Things that are accepted but have no effect (keys of the original format, for example)
    /// or are likely to hurt (a keepalive stock gRPC servers refuse), each naming the file and,
    /// where it can, the line and field.
    pub warnings: Vec<String>,
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        location: None,
        field: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `file` is only used in error messages.
pub fn parse(text: &str, file: &Path) -> Result<Loaded, ConfigError> {
    let err = |location, field: String, message: String| ConfigError {
        file: file.to_path_buf(),
        location,
        field,
        message,
    };
    // A first, schema-free pass tells the two formats apart.
    let probe: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let loc = e.location().map(|l| (l.line(), l.column()));
        err(loc, String::new(), strip_location(&e.to_string()))
    })?;
    let is_seed = probe
        .as_mapping()
        .is_some_and(|m| m.contains_key(serde_yaml::Value::from("proxy")));
    let (config, warnings, origin) = if is_seed {
        let seed: seed::SeedFile = typed(text, file)?;
        seed.into_native()
    } else {
        (typed::<Config>(text, file)?, Vec::new(), Vec::new())
    };
    // Point at a field in the file; for the original format the native path is mapped back to
    // the entry it came from where it can be.
    let located = std::cell::OnceCell::new();
    let original = |field: &str| {
        if is_seed {
            seed::SeedFile::original_path(field, &origin)
        } else {
            field.to_string()
        }
    };
    let place = |field: &str| {
        nearest(
            located.get_or_init(|| locate::locate(text)),
            &original(field),
        )
    };
    if let Err((field, message)) = validate::validate(&config) {
        return Err(err(place(&field), field, message));
    }
    let located_at = |path: &str| nearest(located.get_or_init(|| locate::locate(text)), path);
    let mut warnings: Vec<String> = warnings
        .into_iter()
        .map(|(path, message)| err(located_at(&path), path, message).to_string())
        .collect();
    for (field, message) in validate::warnings(&config) {
        warnings.push(err(place(&field), original(&field), message).to_string());
    }
    Ok(Loaded { config, warnings })
}

fn typed<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location().map(|l| (l.line(), l.column()));
        ConfigError {
            file: file.to_path_buf(),
            location: loc,
            field: if field == "." { String::new() } else { field },
            message: strip_location(&inner.to_string()),
        }
    })
}

/// serde_yaml appends "at line L column C"; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The location of `path` or of its nearest located ancestor.
fn nearest(
    located: &std::collections::HashMap<String, (usize, usize)>,
    path: &str,
) -> Option<(usize, usize)> {
    let mut p = path.to_string();
    loop {
        if let Some(l) = located.get(&p) {
            return Some(*l);
        }
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}

#[cfg(test)]
mod tests;
