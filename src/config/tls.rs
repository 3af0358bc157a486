//! `listeners[].tls` and `upstreams[].tls`: TLS with rustls. h2c (no `tls:`) stays the default.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// TLS on a listener: ALPN `h2`, the certificate chain and key re-read when the files change,
/// and optionally client certificates verified against a CA.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that client certificates are verified against; none:
    /// clients are not asked for a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a certificate (default `true`); `false` lets
    /// them in unauthenticated (a certificate they do present must still verify).
    #[serde(default = "yes")]
    pub require_client_cert: bool,
}

/// TLS towards an upstream group's endpoints.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file with the CA certificates the upstream's certificate is verified against;
    /// none: the system's CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM file with a client certificate chain, for mutual TLS (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name sent as SNI and verified in the upstream's certificate; none: the endpoint's
    /// host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn yes() -> bool {
    true
}

impl ListenerTlsConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (f, p) in [("cert", &self.cert), ("key", &self.key)] {
            if p.as_os_str().is_empty() {
                return Err((f.into(), "must name a PEM file".into()));
            }
        }
        if self.client_ca.is_none() && !self.require_client_cert {
            return Err((
                "require_client_cert".into(),
                "only means something with client_ca".into(),
            ));
        }
        Ok(())
    }
}

impl UpstreamTlsConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.cert.is_some() != self.key.is_some() {
            return Err((
                if self.cert.is_some() { "key" } else { "cert" }.into(),
                "a client certificate needs both cert and key".into(),
            ));
        }
        if let Some(n) = &self.server_name {
            if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
                return Err((
                    "server_name".into(),
                    format!("{n:?} is not a DNS name or IP address"),
                ));
            }
        }
        Ok(())
    }
}
