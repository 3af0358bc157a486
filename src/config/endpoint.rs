//! Upstream endpoints: `host:port#weight` strings or `{ address, weight }` maps.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// One upstream endpoint as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSpec {
    /// `host:port`; the host may be an IP address or a name resolved when dialling.
    pub address: String,
    /// Relative share of traffic (1..=10000). Defaults to 1.
    pub weight: u32,
}

/// The most a weight may be; keeps weighted schedules small.
pub const MAX_WEIGHT: u32 = 10_000;

impl EndpointSpec {
    /// Parses `host:port` or `host:port#weight`.
    pub fn parse(s: &str) -> Result<EndpointSpec, String> {
        let (address, weight) = match s.split_once('#') {
            Some((a, w)) => {
                let w: u32 = w.trim().parse().map_err(|_| {
                    format!("invalid weight {w:?} in endpoint {s:?}: expected a whole number")
                })?;
                (a.trim(), w)
            }
            None => (s.trim(), 1),
        };
        let spec = EndpointSpec {
            address: address.to_string(),
            weight,
        };
        spec.check()?;
        Ok(spec)
    }

    /// Checks the address has a host and a port, and the weight is in range.
    pub fn check(&self) -> Result<(), String> {
        let a = &self.address;
        let (host, port) = a
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint {a:?} has no port: write host:port"))?;
        if host.is_empty() {
            return Err(format!("endpoint {a:?} has no host"));
        }
        port.parse::<u16>()
            .map_err(|_| format!("endpoint {a:?} has an invalid port {port:?}"))?;
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return Err(format!(
                "endpoint {a:?} has weight {}: weights go from 1 to {MAX_WEIGHT}",
                self.weight
            ));
        }
        Ok(())
    }
}

impl fmt::Display for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.address, self.weight)
    }
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EndpointSpec, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an endpoint: \"host:port#weight\" or { address: host:port, weight: N }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                EndpointSpec::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EndpointSpec, A::Error> {
                let mut address: Option<String> = None;
                let mut weight: Option<u32> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => address = Some(map.next_value()?),
                        "weight" => weight = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["address", "weight"]))
                        }
                    }
                }
                let spec = EndpointSpec {
                    address: address.ok_or_else(|| de::Error::missing_field("address"))?,
                    weight: weight.unwrap_or(1),
                };
                spec.check().map_err(de::Error::custom)?;
                Ok(spec)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weighted_strings() {
        let e = EndpointSpec::parse("10.0.0.5:50051#10").unwrap();
        assert_eq!((e.address.as_str(), e.weight), ("10.0.0.5:50051", 10));
        assert_eq!(EndpointSpec::parse("backend-2:50051").unwrap().weight, 1);
        assert!(EndpointSpec::parse("backend-2")
            .unwrap_err()
            .contains("no port"));
        assert!(EndpointSpec::parse("h:1#0")
            .unwrap_err()
            .contains("weight 0"));
        assert!(EndpointSpec::parse("h:99999")
            .unwrap_err()
            .contains("invalid port"));
        assert!(EndpointSpec::parse("h:1#x")
            .unwrap_err()
            .contains("invalid weight"));
    }
}
