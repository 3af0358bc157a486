//! Why a plugin hook call failed: the kinds a plugin's failures are counted and answered by.

use std::fmt;

use super::stats::KINDS;

/// Why a plugin hook call failed.
#[derive(Debug)]
pub enum Failure {
    /// The plugin trapped (a panic, an out-of-bounds access, a stack overflow, …).
    Trap(String),
    /// It ran past its timeout; in which hook (`init`, `on-request`, …).
    Timeout(&'static str),
    /// It tried to grow its memory past `memory_limit`.
    Memory(String),
    /// It answered something the gateway refuses (an illegal header, a bad status code, …).
    Invalid(String),
    /// Every instance was busy for longer than the timeout.
    Busy,
    /// `init` returned an error.
    Init(String),
    /// A new instance could not be created.
    Instantiate(String),
}

impl Failure {
    /// The failure's kind, as labelled in metrics.
    pub fn kind(&self) -> &'static str {
        KINDS[self.index()]
    }

    /// Its index in the metrics' list of kinds.
    pub(super) fn index(&self) -> usize {
        match self {
            Failure::Trap(_) => 0,
            Failure::Timeout(_) => 1,
            Failure::Memory(_) => 2,
            Failure::Invalid(_) => 3,
            Failure::Busy => 4,
            Failure::Init(_) => 5,
            Failure::Instantiate(_) => 6,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Trap(d) => write!(f, "trapped ({d})"),
            Failure::Timeout(during) => write!(f, "timed out in {during}"),
            Failure::Memory(d) => write!(f, "hit its memory limit ({d})"),
            Failure::Invalid(d) => write!(f, "returned an invalid answer: {d}"),
            Failure::Busy => f.write_str("had no free instance within its timeout"),
            Failure::Init(d) => write!(f, "init failed: {d}"),
            Failure::Instantiate(d) => write!(f, "could not be instantiated ({d})"),
        }
    }
}
