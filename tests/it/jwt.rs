//! The `jwt` stage with real calls: HS256 from an environment variable, RS256 and ES256 from PEM
//! keys, RS256 from a JWKS file by `kid`; expired, wrong-audience, unsigned (`alg: none`),
//! badly signed and algorithm-confused tokens refused with UNAUTHENTICATED; claims forwarded as
//! headers. Keys are test fixtures in tests/fixtures/jwt.

use crate::support;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::gateway;
use synapsor_testkit::{Backend, EchoRequest};
use tonic::{Code, Request};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(exp_offset: i64, aud: &str) -> serde_json::Value {
    json!({
        "sub": "alice", "tenant": "gold", "iss": "https://id.example", "aud": aud,
        "exp": (now() as i64 + exp_offset) as u64, "iat": now(),
    })
}

fn sign(
    alg: Algorithm,
    key: &EncodingKey,
    claims: &serde_json::Value,
    kid: Option<&str>,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn cfg(b: &Backend, jwt: &str) -> String {
    support::staged_config(&b.addr.to_string(), &format!("      - jwt: {jwt}"))
}

fn bearer(token: &str) -> Request<EchoRequest> {
    let mut r = Request::new(EchoRequest::default());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn seen(b: &Backend, name: &str) -> Option<String> {
    let md = b.observed.last_metadata.lock().unwrap().clone().unwrap();
    md.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_are_checked_and_claims_forwarded() {
    let b = Backend::start("b").await;
    std::env::set_var("SYNAPSOR_TEST_JWT_SECRET", "s3cret-for-tests-only");
    let gw = gateway(&cfg(
        &b,
        "{ secret_env: SYNAPSOR_TEST_JWT_SECRET, issuer: \"https://id.example\", audience: synapsor,
           leeway: 5s, claims_to_headers: { tenant: x-tenant } }",
    ))
    .await;
    let mut c = gw.client().await;
    let key = EncodingKey::from_secret(b"s3cret-for-tests-only");
    c.unary(bearer(&sign(
        Algorithm::HS256,
        &key,
        &claims(600, "synapsor"),
        None,
    )))
    .await
    .expect("a good token");
    assert_eq!(seen(&b, "x-principal").as_deref(), Some("alice"));
    assert_eq!(seen(&b, "x-tenant").as_deref(), Some("gold"));
    assert_eq!(
        seen(&b, "authorization"),
        None,
        "the token is not forwarded"
    );
    // A claim that cannot travel as an HTTP/2 value (RFC 9113 §8.2.1: no whitespace at either
    // end) is left out; forwarded, it would make the upstream fail the stream.
    let mut padded = claims(600, "synapsor");
    padded["tenant"] = json!(" gold ");
    c.unary(bearer(&sign(Algorithm::HS256, &key, &padded, None)))
        .await
        .expect("a good token with a padded claim");
    assert_eq!(seen(&b, "x-tenant"), None);
    assert_eq!(seen(&b, "x-principal").as_deref(), Some("alice"));
    let refused = |token: String, why: &'static str| {
        let mut c = c.clone();
        async move {
            let st = c.unary(bearer(&token)).await.unwrap_err();
            assert_eq!(st.code(), Code::Unauthenticated, "{why}: {st:?}");
            assert!(st.message().contains(why), "{st:?}");
        }
    };
    refused(
        sign(Algorithm::HS256, &key, &claims(-60, "synapsor"), None),
        "expired",
    )
    .await;
    refused(
        sign(Algorithm::HS256, &key, &claims(600, "other"), None),
        "wrong audience",
    )
    .await;
    let other = EncodingKey::from_secret(b"another-secret");
    refused(
        sign(Algorithm::HS256, &other, &claims(600, "synapsor"), None),
        "signature",
    )
    .await;
    // alg: none — a token with no signature at all.
    let b64 = |v: serde_json::Value| base64_url_encode(v.to_string().as_bytes());
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(600, "synapsor"))
    );
    // jsonwebtoken has no `none` algorithm, so the header itself does not parse.
    refused(unsigned, "malformed token").await;
    assert_eq!(
        base64_url_encode(b"any carnal pleas"),
        "YW55IGNhcm5hbCBwbGVhcw"
    );
    let st = c.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
    assert!(
        st.message().contains("missing token in authorization"),
        "{st:?}"
    );
    assert_eq!(
        b.observed.calls(),
        2,
        "refused calls never reached the upstream"
    );
}

/// base64url without padding, as JWTs use.
fn base64_url_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_and_jwks_keys() {
    let b = Backend::start("b").await;
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(format!("{FIXTURES}/rsa-private.pem")).unwrap())
            .unwrap();
    let ec =
        EncodingKey::from_ec_pem(&std::fs::read(format!("{FIXTURES}/ec-private.pem")).unwrap())
            .unwrap();
    let good = claims(600, "synapsor");

    let gw = gateway(&cfg(
        &b,
        &format!("{{ algorithm: RS256, public_key_file: \"{FIXTURES}/rsa-public.pem\" }}"),
    ))
    .await;
    let mut c = gw.client().await;
    c.unary(bearer(&sign(Algorithm::RS256, &rsa, &good, None)))
        .await
        .expect("RS256 with the PEM key");
    // Algorithm confusion: an HS256 token keyed with the public key's bytes.
    let public = std::fs::read(format!("{FIXTURES}/rsa-public.pem")).unwrap();
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public),
        &good,
        None,
    );
    let st = c.unary(bearer(&confused)).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    assert!(st.message().contains("algorithm not accepted"), "{st:?}");

    let gw = gateway(&cfg(
        &b,
        &format!("{{ algorithm: ES256, public_key_file: \"{FIXTURES}/ec-public.pem\" }}"),
    ))
    .await;
    let mut c = gw.client().await;
    c.unary(bearer(&sign(Algorithm::ES256, &ec, &good, None)))
        .await
        .expect("ES256 with the PEM key");
    let st = c
        .unary(bearer(&sign(Algorithm::RS256, &rsa, &good, None)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);

    let gw = gateway(&cfg(
        &b,
        &format!("{{ algorithm: RS256, jwks_file: \"{FIXTURES}/jwks.json\" }}"),
    ))
    .await;
    let mut c = gw.client().await;
    c.unary(bearer(&sign(
        Algorithm::RS256,
        &rsa,
        &good,
        Some("test-rsa-1"),
    )))
    .await
    .expect("JWKS by kid");
    let st = c
        .unary(bearer(&sign(
            Algorithm::RS256,
            &rsa,
            &good,
            Some("unknown-kid"),
        )))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated);
    assert!(
        st.message().contains("no key for the token's kid"),
        "{st:?}"
    );
}
