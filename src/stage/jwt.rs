//! `jwt`: a signed bearer token, checked with one algorithm and one key source — an HS256 secret
//! (from an environment variable or a file), an RS256/ES256 PEM public key, or a JWKS file whose
//! keys are picked by `kid` and which is re-read when it changes. `iss`, `aud`, `exp`/`nbf` with
//! leeway and required claims are checked; tokens signed with any other algorithm (`none`
//! included, and HS256 tokens against a public key: algorithm confusion) are refused. Missing or
//! invalid token: UNAUTHENTICATED. Claims can be copied into upstream headers; the principal
//! claim is forwarded and visible to later stages; the token header is removed unless
//! `forward: true`.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderName;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::Check;
use crate::clock;
use crate::config::JwtConfig;
use crate::grpc::Code;
use crate::stack::Request;
use crate::stack::{Principal, PrincipalSlot, Rejected};

enum Keys {
    One(DecodingKey),
    Jwks {
        path: PathBuf,
        set: ArcSwap<JwkSet>,
        modified: Mutex<Option<SystemTime>>,
        last_check: AtomicU64,
    },
}

struct Shared {
    header: HeaderName,
    validation: Validation,
    keys: Keys,
    claims_to_headers: Vec<(String, HeaderName)>,
    principal_claim: String,
    principal_header: HeaderName,
    forward: bool,
}

/// The layer of one `jwt` stage.
#[derive(Clone)]
pub struct JwtLayer {
    shared: Arc<Shared>,
}

fn read_jwks(path: &PathBuf) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", path.display()))
}

impl JwtLayer {
    /// From the YAML; fails when a secret or key cannot be read.
    pub fn new(cfg: &JwtConfig) -> Result<JwtLayer, String> {
        let alg = match cfg.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => return Err(format!("unsupported algorithm {other}")),
        };
        let keys = if let Some(var) = &cfg.secret_env {
            let secret =
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
            Keys::One(DecodingKey::from_secret(secret.as_bytes()))
        } else if let Some(f) = &cfg.secret_file {
            let secret = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            Keys::One(DecodingKey::from_secret(secret))
        } else if let Some(f) = &cfg.public_key_file {
            let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let key = match alg {
                Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            }
            .map_err(|e| format!("{}: {e}", f.display()))?;
            Keys::One(key)
        } else if let Some(f) = &cfg.jwks_file {
            Keys::Jwks {
                set: ArcSwap::from_pointee(read_jwks(f)?),
                modified: Mutex::new(std::fs::metadata(f).and_then(|m| m.modified()).ok()),
                last_check: AtomicU64::new(clock::now_ms()),
                path: f.clone(),
            }
        } else {
            return Err("no key source".into());
        };
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway.0.as_secs();
        let mut required = vec!["exp".to_string()];
        required.extend(cfg.required_claims.iter().cloned());
        validation.set_required_spec_claims(&required);
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
        }
        match &cfg.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).expect("validated");
        Ok(JwtLayer {
            shared: Arc::new(Shared {
                header: name(&cfg.header),
                validation,
                keys,
                claims_to_headers: cfg
                    .claims_to_headers
                    .iter()
                    .map(|(c, h)| (c.clone(), name(h)))
                    .collect(),
                principal_claim: cfg.principal_claim.clone(),
                principal_header: name(&cfg.principal_header),
                forward: cfg.forward,
            }),
        })
    }

    fn maybe_reload(&self) {
        let Keys::Jwks {
            path,
            set,
            modified,
            last_check,
        } = &self.shared.keys
        else {
            return;
        };
        if !clock::due(last_check, 1000) {
            return;
        }
        let m = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut known = modified.lock().expect("not poisoned");
        if m == *known {
            return;
        }
        match read_jwks(path) {
            Ok(s) => {
                set.store(Arc::new(s));
                *known = m;
                tracing::info!(file = %path.display(), "JWKS reloaded");
            }
            Err(e) => tracing::warn!("keeping the previous JWKS: {e}"),
        }
    }

    /// Authenticates one call, rewriting its headers.
    pub fn check(&self, req: &mut Request) -> Result<(), Rejected> {
        self.maybe_reload();
        let s = &self.shared;
        let unauth = |m: String| Rejected::new(Code::Unauthenticated, m);
        let raw = req
            .headers()
            .get(&s.header)
            .ok_or_else(|| unauth(format!("missing token in {}", s.header)))?;
        let raw = raw.to_str().map_err(|_| unauth("malformed token".into()))?;
        let token = match raw.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => raw.trim(),
        };
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| unauth("malformed token".into()))?;
        let jwk_key;
        let key = match &s.keys {
            Keys::One(k) => k,
            Keys::Jwks { set, .. } => {
                let set = set.load();
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None => set.keys.first(),
                }
                .ok_or_else(|| unauth("no key for the token's kid".into()))?;
                jwk_key =
                    DecodingKey::from_jwk(jwk).map_err(|_| unauth("unusable JWKS key".into()))?;
                &jwk_key
            }
        };
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, key, &s.validation).map_err(|e| {
                unauth(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".into(),
                    ErrorKind::ImmatureSignature => "token not yet valid".into(),
                    ErrorKind::InvalidAudience => "token has the wrong audience".into(),
                    ErrorKind::InvalidIssuer => "token has the wrong issuer".into(),
                    ErrorKind::InvalidSignature => "token signature is invalid".into(),
                    ErrorKind::InvalidAlgorithm => "token algorithm not accepted".into(),
                    ErrorKind::MissingRequiredClaim(c) => format!("token lacks the {c} claim"),
                    _ => "invalid token".into(),
                })
            })?;
        let claims = data.claims;
        let as_text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !s.forward {
            req.headers_mut().remove(&s.header);
        }
        for (claim, header) in &s.claims_to_headers {
            req.headers_mut().remove(header);
            if let Some(v) = claims.get(claim) {
                // A claim that cannot travel as an HTTP/2 value is left out.
                if let Some(v) = crate::grpc::field_value(&as_text(v)) {
                    req.headers_mut().insert(header.clone(), v);
                }
            }
        }
        req.headers_mut().remove(&s.principal_header);
        if let Some(p) = claims.get(&s.principal_claim).map(as_text) {
            if let Some(v) = crate::grpc::field_value(&p) {
                req.headers_mut().insert(s.principal_header.clone(), v);
            }
            if let Some(slot) = req.extensions().get::<PrincipalSlot>() {
                let _ = slot.0.set(p.clone());
            }
            req.extensions_mut().insert(Principal(p));
        }
        Ok(())
    }
}

impl Check for JwtLayer {
    const KIND: &'static str = "jwt";

    fn check(&self, req: &mut Request) -> Result<(), Rejected> {
        JwtLayer::check(self, req)
    }
}
