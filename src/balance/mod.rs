//! Load balancers: pick an endpoint of a group among those in rotation.
//!
//! Weights are effective weights: a slow-starting endpoint counts for a growing share of its
//! configured weight.
//!
//! - `random_weight`: weighted random.
//! - `least_request`: fewest in-flight streams per unit of weight; ties broken at random.
//! - `round_robin`: smooth weighted round robin (nginx's), precomputed into a schedule walked with
//!   one atomic counter, so no lock is taken per call.
//! - `p2c_ewma`: two random candidates, the one with the lower peak-EWMA latency × (in-flight + 1)
//!   / weight wins (linkerd's power of two choices).
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
    /// `round_robin`: endpoint indices in smooth weighted order.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer with `policy` over endpoints of these weights.
    pub fn new(policy: Balance, weights: &[u32]) -> Balancer {
        let schedule = if policy == Balance::RoundRobin {
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
            Balance::LeastRequest => least_request(eps, &ok, rng),
            Balance::RoundRobin => {
                // A slow-starting endpoint keeps its turn only as often as its ramp allows.
                let ramped = |i: usize| {
                    ok(i)
                        && match eps[i].ramp_share() {
                            None => true,
                            Some(pct) => rand::random_range(0..100) < pct,
                        }
                };
                self.round_robin(&ramped).or_else(|| self.round_robin(&ok))
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

fn least_request<R: Rng + ?Sized>(
    eps: &[Arc<Endpoint>],
    ok: &dyn Fn(usize) -> bool,
    rng: &mut R,
) -> Option<usize> {
    // Compare (in_flight + 1)/weight — the load once this call is placed, so that weights
    // count even when nothing is in flight — exactly, by cross-multiplying; reservoir-sample
    // among ties.
    let mut best: Option<(u64, u64)> = None;
    let mut chosen = None;
    let mut ties = 0u32;
    for i in (0..eps.len()).filter(|&i| ok(i)) {
        let load = eps[i].in_flight.load(Ordering::Relaxed) + 1;
        let w = eps[i].effective_weight();
        let ord = match best {
            None => std::cmp::Ordering::Less,
            Some((bl, bw)) => (load * bw).cmp(&(bl * w)),
        };
        match ord {
            std::cmp::Ordering::Less => {
                best = Some((load, w));
                chosen = Some(i);
                ties = 1;
            }
            std::cmp::Ordering::Equal => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    chosen = Some(i);
                }
            }
            std::cmp::Ordering::Greater => {}
        }
    }
    chosen
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
