//! The request head a call sends upstream.

use std::time::Duration;

use http::request::Parts;
use http::uri::{Scheme, Uri};
use http::Request;

use crate::grpc;

/// The head sent upstream for a client request head `parts` (hop-by-hop headers already
/// stripped): the same method, path, authority and metadata, with `grpc-timeout` set to the
/// `remaining` deadline budget when there is one. A missing scheme becomes `http` and a missing
/// authority the endpoint's address.
pub fn upstream_request(parts: &Parts, endpoint: &str, remaining: Option<Duration>) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    let uri = &parts.uri;
    *req.uri_mut() = if uri.scheme().is_some() && uri.authority().is_some() {
        uri.clone()
    } else {
        let mut p = uri.clone().into_parts();
        p.scheme.get_or_insert(Scheme::HTTP);
        if p.authority.is_none() {
            p.authority = endpoint.parse().ok();
        }
        Uri::from_parts(p).unwrap_or_else(|_| uri.clone())
    };
    // The client's head stays with the call, so a stream refused before it started can be
    // sent again elsewhere.
    *req.headers_mut() = parts.headers.clone();
    if let Some(r) = remaining {
        req.headers_mut()
            .insert(grpc::GRPC_TIMEOUT, grpc::encode_timeout(r));
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_scheme_and_authority_and_sets_the_budget() {
        let (parts, ()) = Request::post("/pkg.Svc/Call")
            .header("x-a", "1")
            .header("grpc-timeout", "10S")
            .body(())
            .unwrap()
            .into_parts();
        let req = upstream_request(&parts, "10.0.0.5:50051", Some(Duration::from_millis(1500)));
        assert_eq!(req.uri().to_string(), "http://10.0.0.5:50051/pkg.Svc/Call");
        assert_eq!(req.headers()["x-a"], "1");
        assert_eq!(req.headers()["grpc-timeout"], "1500000u");
        let (parts, ()) = Request::post("http://svc.local/pkg.Svc/Call")
            .body(())
            .unwrap()
            .into_parts();
        let req = upstream_request(&parts, "10.0.0.5:50051", None);
        assert_eq!(
            req.uri().authority().unwrap(),
            "svc.local",
            "the client's authority is kept"
        );
        assert!(req.headers().get("grpc-timeout").is_none());
    }
}
