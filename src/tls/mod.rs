//! TLS with rustls (the `ring` provider): listener configs (ALPN `h2`, certificate and key
//! re-read when their files change, optional client-certificate verification, the client's
//! identity for auth stages and plugins) and upstream configs (CA, client certificate, SNI).

mod io;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use io::Io;

use crate::config::{ListenerTlsConfig, UpstreamTlsConfig};

/// How often a listener checks whether its certificate files changed (on the next accept).
const RECHECK_MS: u64 = 1000;

/// Where the system's CA bundle is looked for when an upstream names no `ca`.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(store)
}

/// Builds a listener's rustls config from its files; the error names the file.
pub fn server_config(cfg: &ListenerTlsConfig) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            );
            let v = if cfg.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs(&cfg.cert)?, key(&cfg.key)?)
        .map_err(|e| format!("{} and {}: {e}", cfg.cert.display(), cfg.key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A listener's TLS: the config in force, replaced when the certificate, key or CA file
/// changes (checked at most once a second, on accept). A file that fails to load keeps the
/// old config serving; the failure is logged.
pub struct ServerTls {
    cfg: ListenerTlsConfig,
    current: ArcSwap<ServerConfig>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
    checked: AtomicU64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cfg", &self.cfg).finish()
    }
}

fn stamps(paths: &[&PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

impl ServerTls {
    /// Loads the files; the error names the file.
    pub fn new(cfg: &ListenerTlsConfig) -> Result<Arc<ServerTls>, String> {
        let config = server_config(cfg)?;
        Ok(Arc::new(ServerTls {
            stamps: Mutex::new(stamps(&Self::files(cfg))),
            cfg: cfg.clone(),
            current: ArcSwap::from_pointee(config),
            checked: AtomicU64::new(crate::clock::now_ms()),
        }))
    }

    fn files(cfg: &ListenerTlsConfig) -> Vec<&PathBuf> {
        let mut v = vec![&cfg.cert, &cfg.key];
        v.extend(&cfg.client_ca);
        v
    }

    /// The acceptor for a new connection, after reloading changed files.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        if crate::clock::due(&self.checked, RECHECK_MS) {
            self.reload_if_changed();
        }
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    fn reload_if_changed(&self) {
        let now = stamps(&Self::files(&self.cfg));
        let mut last = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return;
        }
        *last = now;
        match server_config(&self.cfg) {
            Ok(c) => {
                self.current.store(Arc::new(c));
                tracing::info!(cert = %self.cfg.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(error = %e,
                "TLS files changed but do not load; the old certificate stays"),
        }
    }
}

/// An upstream group's TLS: the client config and the name to verify.
#[derive(Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Loads the files; the error names the file.
    pub fn new(cfg: &UpstreamTlsConfig) -> Result<Arc<ClientTls>, String> {
        let store = match &cfg.ca {
            Some(ca) => roots(ca)?,
            None => {
                let bundle = SYSTEM_BUNDLES
                    .iter()
                    .map(Path::new)
                    .find(|p| p.exists())
                    .ok_or("no `ca` given and no system CA bundle found")?;
                roots(bundle)?
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(store);
        let mut config = match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(certs(c)?, key(k)?)
                .map_err(|e| format!("{} and {}: {e}", c.display(), k.display()))?,
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = match &cfg.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone()).map_err(|e| format!("server_name {n:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(Arc::new(ClientTls {
            config: Arc::new(config),
            server_name,
        }))
    }

    /// Runs the TLS handshake with the endpoint at `address` (`host:port`).
    pub async fn connect(&self, address: &str, tcp: tokio::net::TcpStream) -> Result<Io, String> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_string()).map_err(|e| format!("SNI {host:?}: {e}"))?
            }
        };
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("TLS handshake: the upstream did not agree to ALPN h2".into());
        }
        Ok(Io::Client(Box::new(tls)))
    }
}

/// The identity in a client certificate: its first URI SAN (a SPIFFE ID, say), else its first
/// DNS SAN, else its subject's common name.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Ok(Some(san)) = c.subject_alternative_name() {
        let names = &san.value.general_names;
        let uri = names.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        });
        let dns = || {
            names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
        };
        if let Some(id) = uri.or_else(dns) {
            return Some(id);
        }
    }
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    cn
}
