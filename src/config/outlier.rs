//! `upstreams[].outlier_detection`: passive outlier detection, and `slow_start`.

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use crate::grpc::Code;

/// Endpoints whose calls fail `consecutive_failures` times in a row are ejected for
/// `base_ejection_time` × the number of times they were ejected (capped at
/// `max_ejection_time`); never more than `max_ejection_percent` of a group at once.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failed calls in a row that eject an endpoint (default 5).
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// gRPC codes that count as failures, by name (default `[UNAVAILABLE]`). Connect errors,
    /// lost connections, upstream resets and `request_timeout` always count.
    #[serde(default = "default_codes")]
    pub codes: Vec<String>,
    /// Length of the first ejection (default `30s`); the n-th lasts n times as long.
    #[serde(default = "default_base")]
    pub base_ejection_time: Dur,
    /// Longest ejection (default `300s`); an endpoint that stays in this long starts its
    /// count afresh.
    #[serde(default = "default_max")]
    pub max_ejection_time: Dur,
    /// Most of a group ejected at once, in percent (default 10; at least one endpoint may
    /// always be ejected unless this is 0).
    #[serde(default = "ten")]
    pub max_ejection_percent: u32,
}

fn five() -> u32 {
    5
}
fn ten() -> u32 {
    10
}
fn default_codes() -> Vec<String> {
    vec!["UNAVAILABLE".to_string()]
}
fn default_base() -> Dur {
    Dur::secs(30)
}
fn default_max() -> Dur {
    Dur::secs(300)
}

impl OutlierConfig {
    /// The failure codes as a bit set (bit n = code n).
    pub fn code_mask(&self) -> u32 {
        self.codes
            .iter()
            .filter_map(|c| Code::from_name(c))
            .fold(0, |m, c| m | 1 << (c as u32))
    }

    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_string(), m));
        if self.consecutive_failures == 0 || self.consecutive_failures > 10_000 {
            return bad("consecutive_failures", "must be from 1 to 10000".into());
        }
        if self.codes.len() > 17 {
            return bad("codes", "lists at most the 17 gRPC codes".into());
        }
        for (i, c) in self.codes.iter().enumerate() {
            match Code::from_name(c) {
                None => {
                    return bad(
                        &format!("codes[{i}]"),
                        format!("{c:?} is not a gRPC status code name (for example UNAVAILABLE)"),
                    )
                }
                Some(Code::Ok) => return bad(&format!("codes[{i}]"), "OK is not a failure".into()),
                Some(_) => {}
            }
        }
        if self.base_ejection_time.0 < std::time::Duration::from_millis(10) {
            return bad("base_ejection_time", "must be at least 10ms".into());
        }
        if self.max_ejection_time.0 < self.base_ejection_time.0 {
            return bad(
                "max_ejection_time",
                "must be at least base_ejection_time".into(),
            );
        }
        if self.max_ejection_time.0 > std::time::Duration::from_secs(86_400) {
            return bad("max_ejection_time", "must be at most 24h".into());
        }
        if self.max_ejection_percent > 100 {
            return bad("max_ejection_percent", "must be from 0 to 100".into());
        }
        Ok(())
    }
}
