//! The second load client: `h2load` (Debian's nghttp2-client) sending the small unary call as raw
//! HTTP/2 POSTs of a gRPC-framed message, 64 streams over 4 connections like the tonic load. It
//! has nothing of tonic's client in its costs, so a proxy's ratio to direct is measured with a
//! different client in front of it. h2load does not read gRPC trailers, so each run also checks
//! that every 2xx response carried the echoed message (a proxy answering with trailers-only
//! errors fails the run instead of counting as fast).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::load::{Outcome, API_KEY};

/// The message: field 1 (`payload`), 100 bytes.
const MESSAGE_LEN: usize = 2 + 100;

/// The request body: the gRPC frame prefix (not compressed, length) and the message.
fn body() -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(&(MESSAGE_LEN as u32).to_be_bytes());
    b.extend_from_slice(&[0x0a, 100]);
    b.extend_from_slice(&[0x42; 100]);
    b
}

/// True when `h2load` is on the PATH.
pub fn available() -> bool {
    Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs h2load against `addr` for `duration`; `dir` holds its files. There is no warm-up
/// phase, so that the proxy's CPU, read around the whole run, covers just the counted calls (the
/// proxy's upstream connections are warm from the loads and rounds before).
pub fn run(addr: SocketAddr, duration: Duration, dir: &Path) -> anyhow::Result<Outcome> {
    let data = dir.join("h2load-body.bin");
    let log = dir.join("h2load.log");
    std::fs::write(&data, body())?;
    let out = Command::new("timeout")
        .arg((duration.as_secs() + 30).to_string())
        .arg("h2load")
        .args(["--clients=4", "--max-concurrent-streams=16", "--threads=2"])
        .arg(format!("--duration={}", duration.as_secs()))
        .arg(format!("--data={}", data.display()))
        .arg("--header=content-type: application/grpc")
        .arg("--header=te: trailers")
        .arg(format!("--header=x-api-key: {API_KEY}"))
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("http://{addr}/synapsor.test.v1.Echo/Unary"))
        .output()
        .context("running h2load (Debian: apt-get install nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut o = parse(&text)?;
    let log = std::fs::read_to_string(&log)?;
    o.latencies_us = log
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (_, status, us) = (f.next()?, f.next()?, f.next()?);
            (status == "200").then(|| us.parse().ok()).flatten()
        })
        .collect();
    Ok(o)
}

/// Reads the summary: run time, failed requests, responses by status class, and DATA bytes
/// received.
fn parse(text: &str) -> anyhow::Result<Outcome> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let at = line.find(name)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no `{prefix}` line in h2load's output:\n{text}"))
    };
    let req = line("requests:")?;
    let failed: u64 = [" failed", " errored", " timeout"]
        .iter()
        .filter_map(|n| field(req, n))
        .sum();
    let codes = line("status codes:")?;
    let ok = field(codes, " 2xx").context("2xx count")?;
    let refused: u64 = [" 4xx", " 5xx"]
        .iter()
        .filter_map(|n| field(codes, n))
        .sum();
    let traffic = line("traffic:")?;
    let data = traffic
        .rsplit('(')
        .next()
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse::<u64>().ok())
        .context("data bytes")?;
    // Each answered call carries at least the echoed message and its frame prefix.
    if data < ok * (MESSAGE_LEN as u64 + 5) {
        bail!("{ok} 2xx responses but only {data} bytes of DATA: calls were not answered with the echoed message");
    }
    let secs: f64 = line("finished in")?
        .trim_start_matches("finished in")
        .split('s')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .context("run time")?;
    Ok(Outcome {
        elapsed: Duration::from_secs_f64(secs),
        count: ok,
        bytes: ok * 100,
        errors: failed + refused,
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2loads_summary() {
        let text = "finished in 4.00s, 63498.67 req/s, 8.78MB/s\n\
            requests: 190496 total, 190496 started, 190496 done, 190496 succeeded, 0 failed, 0 errored, 0 timeout\n\
            status codes: 190495 2xx, 0 3xx, 0 4xx, 0 5xx\n\
            traffic: 26.34MB (27622951) total, 689.55KB (706096) headers (space savings 95.77%), 25.57MB (26812116) data\n";
        let o = parse(text).unwrap();
        assert_eq!((o.count, o.errors), (190495, 0));
        assert_eq!(o.elapsed, Duration::from_secs(4));
        let short = text.replace("(26812116) data", "(1000) data");
        assert!(parse(&short).is_err(), "trailers-only answers are caught");
        let failing = text
            .replace("0 failed", "7 failed")
            .replace("0 5xx", "2 5xx");
        assert_eq!(parse(&failing).unwrap().errors, 9);
    }
}
