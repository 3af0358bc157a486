//! A credential as `token-cache` gets it from the token service and keeps it in shared state,
//! in the protobuf wire format through the SDK's `wire` module.

use synapsor_plugin_sdk::wire::{self, WireError, Writer};

/// A token and when it stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The credential, sent as `Bearer <value>`.
    pub value: String,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

impl Token {
    /// Whether it is still valid at `now_ms` with `margin_ms` to spare.
    pub fn valid_at(&self, now_ms: u64, margin_ms: u64) -> bool {
        now_ms.saturating_add(margin_ms) < self.expires_at_ms
    }

    /// The stored form: `{ string value = 1; uint64 expires_at_ms = 2; }`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(1, &self.value).varint(2, self.expires_at_ms);
        w.into_bytes()
    }

    /// Reads [`Token::encode`]'s form back; `None` when it is not that.
    pub fn decode(bytes: &[u8]) -> Option<Token> {
        let (mut value, mut expires_at_ms) = (None, None);
        for f in wire::fields(bytes) {
            let f = f.ok()?;
            match f.number {
                1 => value = Some(f.value.as_str()?.to_string()),
                2 => expires_at_ms = Some(f.value.as_varint()?),
                _ => {}
            }
        }
        Some(Token {
            value: value.filter(|v| !v.is_empty())?,
            expires_at_ms: expires_at_ms?,
        })
    }
}

/// `IssueRequest { string audience = 1; }`.
pub fn issue_request(audience: &str) -> Vec<u8> {
    let mut w = Writer::new();
    if !audience.is_empty() {
        w.string(1, audience);
    }
    w.into_bytes()
}

/// Reads `IssueResponse { string token = 1; uint64 expires_in_ms = 2; }` answered at `now_ms`:
/// the token and its lifetime in milliseconds.
pub fn issue_response(bytes: &[u8], now_ms: u64) -> Result<(Token, u64), String> {
    let field = |n: u32| wire::last(bytes, &[n]).map_err(|e: WireError| e.to_string());
    let value = field(1)?.and_then(|v| v.as_str()).unwrap_or_default();
    let lifetime = field(2)?.and_then(|v| v.as_varint()).unwrap_or_default();
    if value.is_empty() {
        return Err("the token service answered no token".into());
    }
    let token = Token {
        value: value.to_string(),
        expires_at_ms: now_ms.saturating_add(lifetime),
    };
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_expire() {
        let t = Token {
            value: "tok-1".into(),
            expires_at_ms: 10_000,
        };
        assert_eq!(Token::decode(&t.encode()), Some(t.clone()));
        assert!(t.valid_at(4_999, 5_000));
        assert!(!t.valid_at(5_000, 5_000));
        assert!(t.valid_at(9_999, 0));
        assert!(!t.valid_at(u64::MAX, 0));
        assert_eq!(Token::decode(b""), None);
        assert_eq!(Token::decode(&[0xff]), None);
    }

    #[test]
    fn issue_messages() {
        assert_eq!(issue_request("billing"), b"\x0a\x07billing");
        assert!(issue_request("").is_empty());
        let mut w = Writer::new();
        w.string(1, "tok-7").varint(2, 1500);
        let (t, life) = issue_response(&w.into_bytes(), 1_000).unwrap();
        assert_eq!(
            (t.value.as_str(), t.expires_at_ms, life),
            ("tok-7", 2_500, 1500)
        );
        assert!(issue_response(b"", 0).unwrap_err().contains("no token"));
        assert!(issue_response(&[0x0a, 0x09], 0).is_err());
    }
}
