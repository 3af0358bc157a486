//! TLS with real certificates (made with rcgen into a temp directory) over real sockets: a TLS
//! listener serves tonic TLS clients and refuses h2c, and picks up a replaced certificate
//! without a restart; with `client_ca`, the client certificate's identity is the principal that
//! `access` rules and plugins see, and clients without a certificate are refused; towards
//! upstreams, a CA, a client certificate (mTLS) and an SNI override. Bad files name the file.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use support::gateway;
use synapsor_testkit::{Backend, BackendOptions, EchoClient, EchoRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A test CA and the files it writes.
struct Pki {
    dir: PathBuf,
    params: CertificateParams,
    key: KeyPair,
    ca_pem: String,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("synapsor-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "synapsor test CA");
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let pki = Pki {
            dir,
            params,
            key,
            ca_pem,
        };
        pki.write("ca.pem", &pki.ca_pem.clone());
        pki
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A certificate and key signed by the CA: (cert PEM, key PEM).
    fn leaf(&self, cn: &str, sans: Vec<SanType>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        let issuer = Issuer::from_params(&self.params, &self.key);
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    fn server(&self, cn: &str) -> (String, String) {
        self.leaf(
            cn,
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ],
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_client(
    addr: SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<EchoClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ch = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(EchoClient::new(ch))
}

fn listener_cfg(backend: SocketAddr, tls: &str, stages: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nlisteners:\n  - name: l\n    listen: 127.0.0.1:0\n    upstream: u\n    tls: {tls}\n{stages}upstreams:\n  - {{ name: u, endpoints: [ \"{backend}\" ] }}\n"
    )
}

/// The certificate a TLS listener presents to a new connection (DER).
async fn presented(addr: SocketAddr, ca: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_h2_refuses_h2c_and_picks_up_a_new_certificate() {
    let pki = Pki::new("listener");
    let (cert, key) = pki.server("first");
    let (cert_file, key_file) = (pki.write("cert.pem", &cert), pki.write("key.pem", &key));
    let b = Backend::start("b").await;
    let gw = gateway(&listener_cfg(
        b.addr,
        &format!(
            "{{ cert: {}, key: {} }}",
            cert_file.display(),
            key_file.display()
        ),
        "",
    ))
    .await;
    let mut c = tls_client(gw.addr, &pki.ca_pem, None).await.unwrap();
    let r = c.unary(EchoRequest::default()).await.unwrap();
    assert_eq!(r.into_inner().backend, "b");
    // h2c on the TLS port gets nowhere.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        synapsor_testkit::lazy_client(gw.addr).unary(EchoRequest::default()),
    )
    .await
    .expect("no hang");
    assert!(plain.is_err());

    // Replace the certificate in place: new connections get it within about a second.
    let (cert2, key2) = pki.server("second");
    pki.write("key.pem", &key2);
    pki.write("cert.pem", &cert2);
    let want = rustls_pki_types::pem::PemObject::from_pem_slice(cert2.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let t = std::time::Instant::now();
    while presented(gw.addr, &pki.ca_pem).await != want {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new certificate never showed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection opened before keeps working.
    c.unary(EchoRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_identity_is_the_principal_for_access_rules_and_plugins() {
    let pki = Pki::new("mtls");
    let (cert, key) = pki.server("gw");
    let (cert_file, key_file) = (pki.write("cert.pem", &cert), pki.write("key.pem", &key));
    let uri = |u: &str| SanType::URI(u.try_into().unwrap());
    let a = pki.leaf("client a", vec![uri("spiffe://test/client-a")]);
    let other = pki.leaf("client b", vec![uri("spiffe://test/client-b")]);
    let cn_only = pki.leaf("client-c", vec![]);
    let b = Backend::start("b").await;
    let stages = format!(
        "    interceptors:\n      - access: {{ allow: [ {{ principals: [\"spiffe://test/client-a\", client-c] }} ] }}\n      - wasm: {{ name: probe, path: \"{}\", timeout: 2s }}\n",
        support::plugin("probe").display()
    );
    let gw = gateway(&listener_cfg(
        b.addr,
        &format!(
            "{{ cert: {}, key: {}, client_ca: {} }}",
            cert_file.display(),
            key_file.display(),
            pki.dir.join("ca.pem").display()
        ),
        &stages,
    ))
    .await;
    let mut c = tls_client(gw.addr, &pki.ca_pem, Some((&a.0, &a.1)))
        .await
        .unwrap();
    c.unary(EchoRequest::default())
        .await
        .expect("client a is allowed");
    let md = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    assert_eq!(
        md.get("x-probe-principal").unwrap(),
        "spiffe://test/client-a"
    );

    let mut c = tls_client(gw.addr, &pki.ca_pem, Some((&cn_only.0, &cn_only.1)))
        .await
        .unwrap();
    c.unary(EchoRequest::default())
        .await
        .expect("no SAN: the common name is the identity");

    let mut c = tls_client(gw.addr, &pki.ca_pem, Some((&other.0, &other.1)))
        .await
        .unwrap();
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");

    // Without a certificate the handshake is refused.
    let refused = match tls_client(gw.addr, &pki.ca_pem, None).await {
        Err(_) => true,
        Ok(mut c) => c.unary(EchoRequest::default()).await.is_err(),
    };
    assert!(refused);
    assert_eq!(b.observed.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_with_a_client_certificate_and_an_sni_override() {
    let pki = Pki::new("upstream");
    let (bcert, bkey) = pki.leaf(
        "backend",
        vec![SanType::DnsName("backend.internal".try_into().unwrap())],
    );
    let b = Backend::start_with(
        "tls-backend",
        BackendOptions {
            tls: Some((bcert, bkey, Some(pki.ca_pem.clone()))),
            ..Default::default()
        },
    )
    .await;
    let (gcert, gkey) = pki.leaf(
        "gateway",
        vec![SanType::DnsName("gateway".try_into().unwrap())],
    );
    let (gcert, gkey) = (pki.write("gw.pem", &gcert), pki.write("gw.key", &gkey));
    let ca = pki.dir.join("ca.pem");
    // A gateway whose upstream `tls:` has these keys (min_connections 0: each call dials, so a
    // refused handshake is what the call reports).
    let with_tls = |keys: &[(&str, &Path)], name: Option<&str>| {
        let mut tls: Vec<String> = keys
            .iter()
            .map(|(k, p)| format!("{k}: {}", p.display()))
            .collect();
        tls.extend(name.map(|n| format!("server_name: {n}")));
        let cfg = support::config(
            &[b.addr.to_string()],
            &format!(
                "    request_timeout: 5s\n    pool: {{ dial_timeout: 2s, min_connections: 0 }}\n    tls: {{ {} }}\n",
                tls.join(", ")
            ),
        );
        async move { gateway(&cfg).await }
    };
    let first_call = |gw: support::TestGateway| async move {
        gw.client().await.unary(EchoRequest::default()).await
    };
    let all = [("ca", ca.as_path()), ("cert", &gcert), ("key", &gkey)];
    let good = with_tls(&all, Some("backend.internal")).await;
    let mut c = good.client().await;
    for _ in 0..3 {
        let r = c
            .unary(EchoRequest::default())
            .await
            .expect("mTLS upstream");
        assert_eq!(r.into_inner().backend, "tls-backend");
    }
    // Without the client certificate the backend refuses the gateway.
    let st = first_call(with_tls(&all[..1], Some("backend.internal")).await)
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
    // The backend's alert, or its reset if it closes before the alert is read.
    assert!(
        st.message().contains("connecting to") && st.message().contains("handshake"),
        "{st:?}"
    );
    // Without the SNI override the name checked is 127.0.0.1, which the certificate lacks.
    let st = first_call(with_tls(&all, None).await).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
    assert!(st.message().contains("TLS handshake"), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tls_files_name_the_listener_and_the_file() {
    let b = Backend::start("b").await;
    let cfg = listener_cfg(
        b.addr,
        "{ cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }",
        "",
    );
    let loaded = synapsor::config::parse(&cfg, std::path::Path::new("t.yaml")).unwrap();
    let err = match synapsor::Gateway::bind(loaded.config)
        .await
        .unwrap()
        .start()
    {
        Ok(_) => panic!("started without its certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("listener \"l\": tls:") && err.contains("/nonexistent/cert.pem"),
        "{err}"
    );
    let bad = support::config(&["127.0.0.1:1".into()], "    tls: { cert: /x.pem }\n");
    let e = synapsor::config::parse(&bad, std::path::Path::new("u.yaml")).unwrap_err();
    assert_eq!(e.field, "upstreams[0].tls.key");
}
