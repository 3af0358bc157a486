//! Load balancers: pick an endpoint of a group among those in rotation.
//!
//! Weights are effective weights: a slow-starting endpoint counts for a growing share of its
//! configured weight.
//!
//! - `random_weight`: weighted random.
//! - `least_request`: fewest in-flight streams per unit of weight; ties (idle endpoints
//!   among them) in smooth weighted round-robin order, so weights hold at any load.
//! - `round_robin`: smooth weighted round robin (nginx's), precomputed into a schedule walked with
//!   one atomic counter, so no lock is taken per call.
//! - `p2c_ewma`: two random candidates, the one with the lower peak-EWMA latency × (in-flight + 1)
//!   / weight wins (linkerd's power of two choices). It follows latency by design: a weight is
//!   not a share of calls but how much more latency × load an endpoint is credited with (weight
//!   2 wins against weight 1 until its latency × load is twice as high), so with equal
//!   latencies the heavier endpoint takes nearly every call at light load.
//!
//! The random source is a parameter so tests can seed it.

mod ewma;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

pub use ewma::PeakEwma;

use crate::config::Balance;
use crate::endpoint::Endpoint;

/// Longest smooth round-robin schedule; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

/// A balancer for one upstream group.
pub struct Balancer {
    policy: Balance,
    /// `round_robin` (and `least_request`, for ties): endpoint indices in smooth weighted order.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer with `policy` over endpoints of these weights.
    pub fn new(policy: Balance, weights: &[u32]) -> Balancer {
        let schedule = if matches!(policy, Balance::RoundRobin | Balance::LeastRequest) {
            smooth_schedule(weights)
        } else {
            Vec::new()
        };
        let start = if schedule.is_empty() {
            0
        } else {
            rand::rng().random_range(0..schedule.len())
        };
        Balancer {
            policy,
            schedule,
            next: AtomicUsize::new(start),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Balance {
        self.policy
    }

    /// Picks an endpoint in rotation, never `avoid` unless it is the only one; `None` when no
    /// endpoint is in rotation.
    pub fn pick<R: Rng + ?Sized>(
        &self,
        eps: &[Arc<Endpoint>],
        avoid: Option<usize>,
        rng: &mut R,
    ) -> Option<usize> {
        let ok = |i: usize| eps[i].available() && Some(i) != avoid;
        let picked = match self.policy {
            Balance::RandomWeight => random_weight(eps, &ok, rng),
            Balance::LeastRequest => self.least_request(eps, &ok, rng),
            Balance::RoundRobin => {
                // A slow-starting endpoint keeps its turn only as often as its ramp allows.
                self.round_robin(&|i| ok(i) && ramped(eps, i))
                    .or_else(|| self.round_robin(&ok))
            }
            Balance::P2cEwma => p2c(eps, &ok, rng),
        };
        // The endpoint to avoid is still better than none.
        picked.or_else(|| avoid.filter(|&i| eps[i].available()))
    }

    fn round_robin(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        // One tick of the shared counter per call; skipping endpoints out of rotation walks on
        // from there locally, so concurrent callers cannot make each other miss a live one.
        let n = self.schedule.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.schedule[(start.wrapping_add(k)) % n])
            .find(|&ep| ok(ep))
    }
}

fn random_weight<R: Rng + ?Sized>(
    eps: &[Arc<Endpoint>],
    ok: &dyn Fn(usize) -> bool,
    rng: &mut R,
) -> Option<usize> {
    let total: u64 = (0..eps.len())
        .filter(|&i| ok(i))
        .map(|i| eps[i].effective_weight())
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.random_range(0..total);
    for i in (0..eps.len()).filter(|&i| ok(i)) {
        let w = eps[i].effective_weight();
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

impl Balancer {
    /// Fewest in-flight streams per unit of (effective) weight, compared exactly by
    /// cross-multiplying. When every endpoint ties — all idle, or all loaded in proportion to
    /// their weights — they are taken in smooth weighted round-robin order, so weights give
    /// exact shares at concurrency 1 as under steady load; a tie among some of them is broken
    /// at random by weight. (Envoy's `least_request` and the original synapsor's `minConn` keep
    /// weights when endpoints are idle, too.)
    fn least_request<R: Rng + ?Sized>(
        &self,
        eps: &[Arc<Endpoint>],
        ok: &dyn Fn(usize) -> bool,
        rng: &mut R,
    ) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None;
        let (mut chosen, mut ties, mut candidates) = (None, 0usize, 0usize);
        for i in (0..eps.len()).filter(|&i| ok(i)) {
            candidates += 1;
            let (load, w) = (
                eps[i].in_flight.load(Ordering::Relaxed),
                eps[i].effective_weight(),
            );
            let ord = best.map_or(std::cmp::Ordering::Less, |(bl, bw)| {
                (load * bw).cmp(&(bl * w))
            });
            match ord {
                std::cmp::Ordering::Less => {
                    best = Some((load, w));
                    (chosen, ties) = (Some(i), 1);
                }
                std::cmp::Ordering::Equal => ties += 1,
                std::cmp::Ordering::Greater => {}
            }
        }
        if ties < 2 {
            return chosen;
        }
        let (bl, bw) = best?;
        let tied = |i: usize| {
            ok(i) && eps[i].in_flight.load(Ordering::Relaxed) * bw == bl * eps[i].effective_weight()
        };
        if ties == candidates {
            return self.round_robin(&|i| tied(i) && ramped(eps, i)).or(chosen);
        }
        random_weight(eps, &tied, rng).or(chosen)
    }
}

/// A slow-starting endpoint keeps only its ramp's share of the round-robin turns it is offered.
fn ramped(eps: &[Arc<Endpoint>], i: usize) -> bool {
    match eps[i].ramp_share() {
        None => true,
        Some(pct) => rand::random_range(0..100) < pct,
    }
}

fn p2c<R: Rng + ?Sized>(
    eps: &[Arc<Endpoint>],
    ok: &dyn Fn(usize) -> bool,
    rng: &mut R,
) -> Option<usize> {
    let n = eps.len();
    // Two distinct uniformly random candidates; when a draw is out of rotation, scan on from it
    // for the first that is in (no allocation on any path).
    let draw = |rng: &mut R, not: Option<usize>| -> Option<usize> {
        let pick = match not {
            None => rng.random_range(0..n),
            Some(_) if n < 2 => return None,
            Some(a) => {
                let r = rng.random_range(0..n - 1);
                if r >= a {
                    r + 1
                } else {
                    r
                }
            }
        };
        (0..n)
            .map(|k| (pick + k) % n)
            .find(|&i| ok(i) && Some(i) != not)
    };
    let a = draw(rng, None)?;
    let Some(b) = draw(rng, Some(a)) else {
        return Some(a);
    };
    let cost = |i: usize| {
        let e = &eps[i];
        let load = e.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
        e.latency.get() * load / e.effective_weight() as f64
    };
    let (ca, cb) = (cost(a), cost(b));
    Some(if ca < cb {
        a
    } else if cb < ca {
        b
    } else if rng.random_bool(0.5) {
        a
    } else {
        b
    })
}

/// nginx's smooth weighted round robin, unrolled into one full period.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x) / g.max(1)).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE / sum).max(1);
        }
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests;
