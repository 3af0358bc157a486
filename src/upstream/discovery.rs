//! DNS discovery: an endpoint written `dns://name:port` stands for every address `name`
//! resolves to (a Kubernetes headless service, say), each with the entry's weight. Names are
//! resolved when the group is built or reloaded and again every `resolve_interval`; a change
//! applies like a reload (new addresses join, gone ones drain). A lookup that fails keeps the
//! addresses of the last one that worked.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::{EndpointSpec, UpstreamConfig};

/// The scheme that marks a DNS endpoint.
pub const DNS_SCHEME: &str = "dns://";

/// Longest wait for one round of lookups.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Most addresses taken from one name.
pub const MAX_ADDRESSES: usize = 256;

/// Addresses last resolved, by `dns://` endpoint.
pub type Resolved = HashMap<String, Vec<SocketAddr>>;

/// `name:port` of a `dns://name:port` endpoint, or `None` for a plain one.
pub fn dns_target(address: &str) -> Option<&str> {
    address.strip_prefix(DNS_SCHEME)
}

/// The `dns://` endpoints of a group.
pub fn dns_names(cfg: &UpstreamConfig) -> Vec<String> {
    cfg.endpoints
        .iter()
        .filter(|e| dns_target(&e.address).is_some())
        .map(|e| e.address.clone())
        .collect()
}

/// Resolves `name:port` with the system resolver (blocking): sorted, without duplicates, at
/// most [`MAX_ADDRESSES`].
pub fn lookup(target: &str) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs.truncate(MAX_ADDRESSES);
    Ok(addrs)
}

/// Resolves each of `names` (blocking); the failures are logged and left out.
pub fn resolve_blocking(upstream: &str, names: &[String]) -> Resolved {
    let mut out = Resolved::new();
    for name in names {
        let target = dns_target(name).unwrap_or(name);
        match lookup(target) {
            Ok(addrs) => {
                out.insert(name.clone(), addrs);
            }
            Err(e) => {
                tracing::warn!(upstream, endpoint = %name, error = %e,
                    "cannot resolve; keeping the addresses it had");
            }
        }
    }
    out
}

/// The group's endpoints with each `dns://` entry replaced by its addresses (an address listed
/// outright, or by an earlier name, is taken once).
pub fn expand(cfg: &UpstreamConfig, resolved: &Resolved) -> Vec<EndpointSpec> {
    let mut out: Vec<EndpointSpec> = Vec::new();
    let mut push = |spec: EndpointSpec| {
        if !out.iter().any(|e| e.address == spec.address) {
            out.push(spec);
        }
    };
    for e in &cfg.endpoints {
        if dns_target(&e.address).is_none() {
            push(e.clone());
            continue;
        }
        for a in resolved.get(&e.address).into_iter().flatten() {
            push(EndpointSpec {
                address: a.to_string(),
                weight: e.weight,
            });
        }
    }
    out
}

/// Resolves each of `names` on a blocking thread, within [`LOOKUP_TIMEOUT`]; `None` when the
/// lookups took longer.
pub async fn resolve(upstream: String, names: Vec<String>) -> Option<Resolved> {
    let job = tokio::task::spawn_blocking(move || resolve_blocking(&upstream, &names));
    match tokio::time::timeout(LOOKUP_TIMEOUT, job).await {
        Ok(Ok(fresh)) => Some(fresh),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_names_and_keeps_plain_endpoints() {
        let cfg: UpstreamConfig = serde_yaml::from_str(
            "{ name: u, endpoints: [\"127.0.0.1:1#3\", \"dns://svc.local:50051#2\", \"dns://gone:1\"] }",
        )
        .unwrap();
        assert_eq!(dns_names(&cfg), ["dns://svc.local:50051", "dns://gone:1"]);
        let mut r = Resolved::new();
        r.insert(
            "dns://svc.local:50051".into(),
            vec![
                "10.0.0.1:50051".parse().unwrap(),
                "10.0.0.2:50051".parse().unwrap(),
            ],
        );
        let got: Vec<String> = expand(&cfg, &r).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            ["127.0.0.1:1#3", "10.0.0.1:50051#2", "10.0.0.2:50051#2"]
        );
    }

    #[test]
    fn looks_up_loopback_literals() {
        assert_eq!(
            lookup("127.0.0.1:80").unwrap(),
            ["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert!(lookup("no-port").is_err());
    }
}
