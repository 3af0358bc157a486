//! `api_key`: a call must carry a known key in a metadata entry. Keys come from the config, a
//! keys file (re-read when it changes, checked at most once a second) and an environment
//! variable; they are compared in constant time. The key's principal is forwarded upstream in a
//! header (replacing whatever the client put there) and put in the request's extensions for
//! later stages; the key header is removed unless `forward: true`. Missing or unknown key:
//! UNAUTHENTICATED. A principal calling a method outside its list: PERMISSION_DENIED.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use super::{Check, Keyer};
use crate::clock;
use crate::config::{validate_keys, ApiKeyConfig, ApiKeyEntry, KeySpec, MissingKey};
use crate::grpc::Code;
use crate::stack::Request;
use crate::stack::{Principal, PrincipalSlot, Rejected};

struct Key {
    secret: Vec<u8>,
    principal: HeaderValue,
    methods: Keyer,
}

impl Key {
    fn new(e: &ApiKeyEntry) -> Key {
        Key {
            secret: e.key.as_bytes().to_vec(),
            principal: HeaderValue::from_str(&e.principal).expect("validated principal"),
            methods: Keyer::new(&KeySpec::Global, MissingKey::Shared, &e.methods),
        }
    }
}

struct Shared {
    header: HeaderName,
    principal_header: HeaderName,
    forward: bool,
    /// Keys from the config and the environment.
    fixed: Vec<ApiKeyEntry>,
    file: Option<PathBuf>,
    file_modified: Mutex<Option<SystemTime>>,
    last_check: AtomicU64,
    keys: ArcSwap<Vec<Key>>,
}

/// The layer of one `api_key` stage.
#[derive(Clone)]
pub struct ApiKeyLayer {
    shared: Arc<Shared>,
}

/// Equal in time that depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses `key=principal,key2=principal2`.
fn env_keys(var: &str) -> Result<Vec<ApiKeyEntry>, String> {
    let value = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
    value
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (key, principal) = pair.split_once('=').ok_or_else(|| {
                format!("{var}: expected key=principal pairs separated by commas")
            })?;
            Ok(ApiKeyEntry {
                key: key.trim().to_string(),
                principal: principal.trim().to_string(),
                methods: Vec::new(),
            })
        })
        .collect()
}

fn file_keys(path: &PathBuf) -> Result<Vec<ApiKeyEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let keys: Vec<ApiKeyEntry> =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    validate_keys(&keys).map_err(|(f, m)| format!("{}: field `{f}`: {m}", path.display()))?;
    Ok(keys)
}

impl ApiKeyLayer {
    /// From the YAML; fails when the keys file or variable cannot be read.
    pub fn new(cfg: &ApiKeyConfig) -> Result<ApiKeyLayer, String> {
        let mut fixed = cfg.keys.clone();
        if let Some(var) = &cfg.keys_env {
            let keys = env_keys(var)?;
            validate_keys(&keys).map_err(|(f, m)| format!("{var}: key {f}: {m}"))?;
            fixed.extend(keys);
        }
        let layer = ApiKeyLayer {
            shared: Arc::new(Shared {
                header: HeaderName::from_bytes(cfg.header.as_bytes()).expect("validated"),
                principal_header: HeaderName::from_bytes(cfg.principal_header.as_bytes())
                    .expect("validated"),
                forward: cfg.forward,
                fixed,
                file: cfg.keys_file.clone(),
                file_modified: Mutex::new(None),
                last_check: AtomicU64::new(clock::now_ms()),
                keys: ArcSwap::from_pointee(Vec::new()),
            }),
        };
        layer.load()?;
        Ok(layer)
    }

    /// (Re)builds the key list from the fixed keys and the keys file.
    fn load(&self) -> Result<(), String> {
        let s = &self.shared;
        let mut entries = s.fixed.clone();
        if let Some(path) = &s.file {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            entries.extend(file_keys(path)?);
            *s.file_modified.lock().expect("not poisoned") = modified;
        }
        s.keys
            .store(Arc::new(entries.iter().map(Key::new).collect()));
        Ok(())
    }

    /// Re-reads the keys file if it changed (checked at most once a second); a file that no
    /// longer parses leaves the old keys in force.
    fn maybe_reload(&self) {
        let s = &self.shared;
        let Some(path) = &s.file else { return };
        if !clock::due(&s.last_check, 1000) {
            return;
        }
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == *s.file_modified.lock().expect("not poisoned") {
            return;
        }
        match self.load() {
            Ok(()) => tracing::info!(file = %path.display(), "API keys reloaded"),
            Err(e) => tracing::warn!("keeping the previous API keys: {e}"),
        }
    }

    /// Authenticates one call, rewriting its headers.
    pub fn check(&self, req: &mut Request) -> Result<(), Rejected> {
        self.maybe_reload();
        let s = &self.shared;
        let Some(given) = req.headers().get(&s.header) else {
            return Err(Rejected::new(
                Code::Unauthenticated,
                format!("missing API key in {}", s.header),
            ));
        };
        let keys = s.keys.load();
        // Compare against every key, so the time taken does not say which one matched.
        let mut found: Option<&Key> = None;
        for k in keys.iter() {
            if constant_time_eq(&k.secret, given.as_bytes()) {
                found = Some(k);
            }
        }
        let Some(key) = found else {
            return Err(Rejected::new(Code::Unauthenticated, "invalid API key"));
        };
        if !key.methods.applies(req) {
            return Err(Rejected::new(
                Code::PermissionDenied,
                format!(
                    "principal {:?} may not call {}",
                    key.principal.to_str().unwrap_or("?"),
                    req.uri().path()
                ),
            ));
        }
        let principal = key.principal.clone();
        if !s.forward {
            req.headers_mut().remove(&s.header);
        }
        req.headers_mut()
            .insert(s.principal_header.clone(), principal.clone());
        let name = principal.to_str().unwrap_or_default().to_string();
        if let Some(slot) = req.extensions().get::<PrincipalSlot>() {
            let _ = slot.0.set(name.clone());
        }
        req.extensions_mut().insert(Principal(name));
        Ok(())
    }
}

impl Check for ApiKeyLayer {
    const KIND: &'static str = "api_key";

    fn check(&self, req: &mut Request) -> Result<(), Rejected> {
        ApiKeyLayer::check(self, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"k-1234567", b"k-1234567"));
        assert!(!constant_time_eq(b"k-1234567", b"k-1234568"));
        assert!(!constant_time_eq(b"k-1234567", b"k-123456"));
    }
}
