use super::*;

fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn decisions_round_trip() {
    let allow = Decision::Allow(hs(&[("x-authz-user", "ada"), ("x-role", "admin")]));
    let deny = Decision::Deny {
        code: 7,
        message: "token deny-x may not call /a.B/C".into(),
    };
    for d in [allow, deny, Decision::Allow(Vec::new())] {
        assert_eq!(Decision::decode(&d.encode()), Some(d));
    }
    assert_eq!(Decision::decode(&[0xff]), None);
}

#[test]
fn actions() {
    let allow = Decision::Allow(hs(&[("x-a", "1"), ("x-b", "2"), ("x-a", "3")]));
    assert_eq!(
        allow.action(),
        RequestAction::Continue(vec![
            HeaderOp::set("x-a", "1"),
            HeaderOp::set("x-b", "2"),
            HeaderOp::append("x-a", "3"),
        ])
    );
    let deny = Decision::Deny {
        code: 16,
        message: "no credentials".into(),
    };
    assert_eq!(
        deny.action(),
        RequestAction::reject(Code::Unauthenticated, "no credentials")
    );
    let odd = Decision::Deny {
        code: 99,
        message: String::new(),
    };
    assert_eq!(odd.action(), RequestAction::reject(Code::Unknown, ""));
}

#[test]
fn check_messages() {
    let req = check_request(
        "/a.B/C",
        Some("svc-1"),
        &hs(&[("authorization", "Bearer t")]),
    );
    assert_eq!(
        wire::first(&req, "1").unwrap().unwrap().as_str(),
        Some("/a.B/C")
    );
    assert_eq!(
        wire::first(&req, "2").unwrap().unwrap().as_str(),
        Some("svc-1")
    );
    assert_eq!(
        wire::first(&req, "3.2").unwrap().unwrap().as_str(),
        Some("Bearer t")
    );
    let anon = check_request("/a.B/C", None, &[]);
    assert_eq!(wire::first(&anon, "2").unwrap(), None);

    // What the testkit's Authz service answers for an `allow` token.
    let mut w = Writer::new();
    w.message(1, |h| {
        h.string(1, "X-Authz-User").string(2, "allow-1");
    });
    w.message(1, |h| {
        h.string(2, "nameless");
    });
    assert_eq!(
        check_response(&w.into_bytes()).unwrap(),
        hs(&[("x-authz-user", "allow-1")])
    );
    assert!(check_response(&[0x0a, 0x05]).is_err());
}

#[test]
fn cache_keys_separate_what_differs() {
    let h = hs(&[("authorization", "Bearer a")]);
    let k = cache_key("/a.B/C", None, &h);
    assert_eq!(k.len(), 70);
    assert!(k.starts_with("authz:"));
    assert_eq!(k, cache_key("/a.B/C", None, &h));
    assert_ne!(k, cache_key("/a.B/D", None, &h));
    assert_ne!(k, cache_key("/a.B/C", Some(""), &h));
    assert_ne!(
        k,
        cache_key("/a.B/C", None, &hs(&[("authorization", "Bearer b")]))
    );
    // Lengths are hashed too: moving bytes between parts changes the key.
    let split = cache_key("/a.B/C", None, &hs(&[("ab", "c")]));
    assert_ne!(split, cache_key("/a.B/C", None, &hs(&[("a", "bc")])));
}
