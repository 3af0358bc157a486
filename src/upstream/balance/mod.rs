//! Load balancers: pick an endpoint of a group among those in rotation.
//!
//! Weights are effective weights: a slow-starting endpoint counts for a growing share of its
//! configured weight.
//!
//! - `random_weight`: weighted random.
//! - `least_request`: fewest in-flight streams per unit of weight (once the call is placed);
//!   idle endpoints in smooth weighted round-robin order, so weights hold exactly at
//!   concurrency 1 and, through the in-flight counts, under steady load.
//! - `round_robin`: smooth weighted round robin (nginx's), precomputed into a schedule walked with
//!   one atomic counter, so no lock is taken per call.
//! - `p2c_ewma`: two random candidates, the one with the lower peak-EWMA latency × (in-flight + 1)
//!   / weight wins (linkerd's power of two choices). It follows latency by design: a weight is
//!   not a share of calls but how much more latency × load an endpoint is credited with (weight
//!   2 wins against weight 1 until its latency × load is twice as high), so with equal
//!   latencies the heavier endpoint takes nearly every call at light load.
//!
//! The random source is a parameter so tests can seed it.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use rand::Rng;

use crate::config::Balance;
use crate::upstream::load::Load;

/// Longest smooth round-robin schedule; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

/// A balancer for one upstream group.
pub struct Balancer {
    policy: Balance,
    /// `round_robin` (and `least_request`, for ties): endpoint indices in smooth weighted order.
    schedule: Vec<usize>,
    next: AtomicUsize,
    /// `least_request` with unequal weights: each endpoint's smooth round-robin credit.
    credit: Vec<AtomicI64>,
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
            credit: weights.iter().map(|_| AtomicI64::new(0)).collect(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> Balance {
        self.policy
    }

    /// Picks an endpoint in rotation, never `avoid` unless it is the only one; `None` when no
    /// endpoint is in rotation.
    pub fn pick<L: Load, R: Rng + ?Sized>(
        &self,
        eps: &[L],
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

fn random_weight<L: Load, R: Rng + ?Sized>(
    eps: &[L],
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
    /// Fewest streams in flight per unit of weight. With equal (effective) weights: the fewest
    /// in flight; when all tie (all idle, say) in round-robin order, when some tie one of them
    /// at random. With unequal weights: see [`Balancer::weighted_least`] — the weights' exact
    /// shares while idle (the original synapsor's `minConn` and Envoy's `least_request` keep
    /// weights when endpoints are idle), fewest in flight per weight under load.
    fn least_request<L: Load, R: Rng + ?Sized>(
        &self,
        eps: &[L],
        ok: &dyn Fn(usize) -> bool,
        rng: &mut R,
    ) -> Option<usize> {
        let mut weights = (0..eps.len())
            .filter(|&i| ok(i))
            .map(|i| eps[i].effective_weight());
        let first = weights.next()?;
        if weights.all(|w| w == first) {
            return self.fewest_in_flight(eps, ok, rng);
        }
        self.weighted_least(eps, ok)
            .or_else(|| random_weight(eps, ok, rng))
    }

    /// The endpoint with the fewest streams in flight (equal weights).
    fn fewest_in_flight<L: Load, R: Rng + ?Sized>(
        &self,
        eps: &[L],
        ok: &dyn Fn(usize) -> bool,
        rng: &mut R,
    ) -> Option<usize> {
        let load = |i: usize| eps[i].in_flight();
        let (mut best, mut chosen, mut ties, mut candidates) = (u64::MAX, None, 0u32, 0u32);
        for i in (0..eps.len()).filter(|&i| ok(i)) {
            candidates += 1;
            let l = load(i);
            if l < best {
                (best, chosen, ties) = (l, Some(i), 1);
            } else if l == best {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    chosen = Some(i);
                }
            }
        }
        if ties > 1 && ties == candidates {
            return self.round_robin(&|i| ok(i) && load(i) == best).or(chosen);
        }
        chosen
    }

    /// Unequal weights: smooth weighted round robin (nginx's) over a dynamic weight recomputed
    /// at every pick, `u² / (u + in_flight)` where `u` is the endpoint's weight relative to the
    /// mean. Idle, that is `u`: exactly the weights' shares. An endpoint holding more streams
    /// than its share gets proportionally fewer calls, and with the streams in proportion to
    /// the weights the dynamic weights are too, so the weights hold at any concurrency (where
    /// Envoy's `weight / (in_flight + 1)` drifts towards the square root of the weights as load
    /// grows). The running credits are shared atomics: concurrent picks only blur the order.
    fn weighted_least<L: Load>(&self, eps: &[L], ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.credit.len() != eps.len() {
            return None; // Built for another member list: the caller picks by weight instead.
        }
        let live = || (0..eps.len()).filter(|&i| ok(i));
        let (sum, n) = live().fold((0u64, 0u64), |(s, n), i| {
            (s + eps[i].effective_weight(), n + 1)
        });
        let mean = sum as f64 / n.max(1) as f64;
        let (mut total, mut best): (i64, Option<(usize, i64)>) = (0, None);
        for i in live() {
            let u = eps[i].effective_weight() as f64 / mean;
            let in_flight = eps[i].in_flight() as f64;
            let dynamic = (u * u / (u + in_flight) * 1_000_000.0) as i64;
            let credit = self.credit[i].fetch_add(dynamic, Ordering::Relaxed) + dynamic;
            total += dynamic;
            if best.is_none_or(|(_, c)| credit > c) {
                best = Some((i, credit));
            }
        }
        let (i, _) = best?;
        self.credit[i].fetch_sub(total, Ordering::Relaxed);
        Some(i)
    }
}

/// A slow-starting endpoint keeps only its ramp's share of the round-robin turns it is offered.
fn ramped<L: Load>(eps: &[L], i: usize) -> bool {
    match eps[i].ramp_share() {
        None => true,
        Some(pct) => rand::random_range(0..100) < pct,
    }
}

fn p2c<L: Load, R: Rng + ?Sized>(
    eps: &[L],
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
        let load = e.in_flight() as f64 + 1.0;
        e.latency_nanos() * load / e.effective_weight() as f64
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
