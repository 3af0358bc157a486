//! `access`: deny rules first, then allow rules, then the default, over the call's method, peer
//! address and principal (from an earlier auth stage). Refused: PERMISSION_DENIED.

use std::sync::Arc;

use super::{Check, Keyer};
use crate::config::{AccessConfig, AccessDefault, AccessRule, Cidr, KeySpec, MissingKey};
use crate::grpc::Code;
use crate::stack::Request;
use crate::stack::{PeerAddr, Principal, Rejected};

struct Rule {
    methods: Option<Keyer>,
    peers: Vec<Cidr>,
    principals: Vec<String>,
}

impl Rule {
    fn new(r: &AccessRule) -> Rule {
        Rule {
            methods: (!r.methods.is_empty())
                .then(|| Keyer::new(&KeySpec::Global, MissingKey::Shared, &r.methods)),
            peers: r
                .peers
                .iter()
                .map(|p| Cidr::parse(p).expect("validated"))
                .collect(),
            principals: r.principals.clone(),
        }
    }

    fn matches(&self, req: &Request) -> bool {
        if let Some(m) = &self.methods {
            if !m.applies(req) {
                return false;
            }
        }
        if !self.peers.is_empty() {
            let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>() else {
                return false;
            };
            if !self.peers.iter().any(|c| c.contains(peer.ip())) {
                return false;
            }
        }
        if !self.principals.is_empty() {
            let Some(Principal(p)) = req.extensions().get::<Principal>() else {
                return false;
            };
            if !self.principals.iter().any(|x| x == p) {
                return false;
            }
        }
        true
    }
}

struct Shared {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    default: AccessDefault,
}

/// The layer of one `access` stage.
#[derive(Clone)]
pub struct AccessLayer {
    shared: Arc<Shared>,
}

impl AccessLayer {
    /// From the YAML.
    pub fn new(cfg: &AccessConfig) -> AccessLayer {
        AccessLayer {
            shared: Arc::new(Shared {
                allow: cfg.allow.iter().map(Rule::new).collect(),
                deny: cfg.deny.iter().map(Rule::new).collect(),
                default: cfg.default,
            }),
        }
    }

    /// Allows or refuses one call.
    pub fn check(&self, req: &Request) -> Result<(), Rejected> {
        let s = &self.shared;
        let refuse = |why: &str| {
            Err(Rejected::new(
                Code::PermissionDenied,
                format!("access to {} {why}", req.uri().path()),
            ))
        };
        if let Some(i) = s.deny.iter().position(|r| r.matches(req)) {
            return refuse(&format!("denied by rule deny[{i}]"));
        }
        if s.allow.iter().any(|r| r.matches(req)) || s.default == AccessDefault::Allow {
            return Ok(());
        }
        refuse("denied: no allow rule matches")
    }
}

impl Check for AccessLayer {
    const KIND: &'static str = "access";

    fn check(&self, req: &mut Request) -> Result<(), Rejected> {
        AccessLayer::check(self, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Body;

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()), "v4-mapped");
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
    }

    #[test]
    fn deny_then_allow_then_default() {
        let cfg: AccessConfig = serde_yaml::from_str(
            "{ allow: [ { methods: [\"/a.B/*\"], peers: [\"10.0.0.0/8\"] }, { principals: [root] } ],
               deny: [ { methods: [\"/a.B/Drop\"] } ] }",
        )
        .unwrap();
        let l = AccessLayer::new(&cfg);
        let req = |path: &str, peer: &str, principal: Option<&str>| {
            let mut r = http::Request::post(path).body(Body::empty()).unwrap();
            r.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
            if let Some(p) = principal {
                r.extensions_mut().insert(Principal(p.into()));
            }
            r
        };
        assert!(l.check(&req("/a.B/Get", "10.1.2.3:4", None)).is_ok());
        let e = l
            .check(&req("/a.B/Drop", "10.1.2.3:4", Some("root")))
            .unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
        assert!(e.message.contains("deny[0]"), "{}", e.message);
        assert!(l.check(&req("/a.B/Get", "192.168.0.1:4", None)).is_err());
        assert!(l
            .check(&req("/x.Y/Z", "192.168.0.1:4", Some("root")))
            .is_ok());
    }
}
