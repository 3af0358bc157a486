//! What a limit is kept per (`global`, `peer_ip`, `method`, `metadata:NAME`) and which methods it
//! applies to.

use http::HeaderName;

use crate::config::{KeySpec, MissingKey};
use crate::stack::PeerAddr;
use crate::stack::Request;

/// Extracts a stage's key from a request and decides whether the stage applies to it.
#[derive(Clone, Debug)]
pub struct Keyer {
    spec: KeySpec,
    header: Option<HeaderName>,
    missing: MissingKey,
    /// Exact paths and prefixes (from `/pkg.Svc/*`); empty: every method.
    exact: Vec<String>,
    prefixes: Vec<String>,
    all: bool,
}

/// Why no key could be had.
#[derive(Debug)]
pub enum KeyError {
    /// The key's metadata is missing and `missing_key: reject`.
    Missing(String),
}

impl Keyer {
    /// From a validated key spec and method patterns.
    pub fn new(spec: &KeySpec, missing: MissingKey, methods: &[String]) -> Keyer {
        let header = match spec {
            KeySpec::Metadata(n) => Some(HeaderName::from_bytes(n.as_bytes()).expect("validated")),
            _ => None,
        };
        let mut k = Keyer {
            spec: spec.clone(),
            header,
            missing,
            exact: Vec::new(),
            prefixes: Vec::new(),
            all: methods.is_empty(),
        };
        for m in methods {
            if m == "*" {
                k.all = true;
            } else if let Some(p) = m.strip_suffix('*') {
                k.prefixes.push(p.to_string());
            } else {
                k.exact.push(m.clone());
            }
        }
        k
    }

    /// True when the stage applies to this call's method.
    pub fn applies(&self, req: &Request) -> bool {
        if self.all {
            return true;
        }
        let path = req.uri().path();
        self.exact.iter().any(|e| e == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }

    /// The key of this call (`""` for `global` and for shared missing metadata).
    pub fn key(&self, req: &Request) -> Result<String, KeyError> {
        Ok(match &self.spec {
            KeySpec::Global => String::new(),
            KeySpec::Method => req.uri().path().to_string(),
            KeySpec::PeerIp => req
                .extensions()
                .get::<PeerAddr>()
                .map(|p| p.0.ip().to_string())
                .unwrap_or_default(),
            KeySpec::Metadata(name) => {
                let header = self.header.as_ref().expect("metadata key has a header");
                match req.headers().get(header) {
                    Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    None if self.missing == MissingKey::Reject => {
                        return Err(KeyError::Missing(name.clone()))
                    }
                    None => String::new(),
                }
            }
        })
    }

    /// How the key is described in messages.
    pub fn describe(&self, key: &str) -> String {
        match self.spec {
            KeySpec::Global => "global".to_string(),
            _ => format!("{}={key}", self.spec),
        }
    }
}
