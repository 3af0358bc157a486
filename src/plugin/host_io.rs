//! The `callout` and `state` interfaces of contract 0.2.1, as host functions. Both may wait (for
//! an upstream, for Redis): the guest's fiber is suspended meanwhile and the wait is taken out
//! of the hook's CPU budget ([`super::budget::Budget::resume`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::bindings::{v2, CalloutError, CalloutRequest, CalloutResponse, StateError};
use super::host::HostState;
use super::state::{Answer, Op};

use v2::synapsor::plugin::{callout, state};

impl HostState {
    /// Runs `op` on the plugin's store, the wait kept out of the hook's budget.
    async fn state_op(&mut self, op: Op<'_>) -> Result<Answer, StateError> {
        let since = self.waiting(true);
        let r = self.shared.state.run(op).await;
        self.waiting(false);
        self.budget.resume(since);
        r.map_err(Into::into)
    }

    /// Raises (or lowers) the hook call's "waiting for the host" flag; returns when the wait
    /// started, for [`super::budget::Budget::resume`].
    fn waiting(&mut self, waiting: bool) -> std::time::Instant {
        if let Some(w) = &self.host_wait {
            w.store(waiting, Ordering::Relaxed);
        }
        self.budget.pause()
    }
}

/// The longest time to live a value gets (a longer one is taken as this): the same for both
/// stores, and within what Redis accepts.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms).min(MAX_TTL))
}

impl callout::Host for HostState {
    async fn call(&mut self, request: CalloutRequest) -> Result<CalloutResponse, CalloutError> {
        let Some(callouts) = self.shared.callouts.as_ref() else {
            return Err(CalloutError::NotAllowed(
                "this plugin has no callouts in its configuration".into(),
            ));
        };
        let Some(call) = self.call.as_ref() else {
            return Err(CalloutError::NotAllowed(
                "callouts are made from hooks, not from init".into(),
            ));
        };
        if self.callouts_made >= callouts.max_per_hook {
            callouts
                .refused
                .count(super::callout::Outcome::Limited, None);
            return Err(CalloutError::Limited(format!(
                "callouts.max_per_hook ({}) callouts made in this hook call already",
                callouts.max_per_hook
            )));
        }
        self.callouts_made += 1;
        let worker = call.worker.unwrap_or(0);
        let left = call
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        let shared = self.shared.clone();
        let since = self.waiting(true);
        let r = shared
            .callouts
            .as_ref()
            .expect("checked above")
            .call(worker, request, left)
            .await;
        self.waiting(false);
        self.budget.resume(since);
        r
    }
}

impl state::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, StateError> {
        match self.state_op(Op::Get(&key)).await? {
            Answer::Value(v) => Ok(v),
            _ => Ok(None),
        }
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), StateError> {
        self.state_op(Op::Set(&key, &value, ttl(ttl_ms)))
            .await
            .map(|_| ())
    }

    async fn delete(&mut self, key: String) -> Result<bool, StateError> {
        let a = self.state_op(Op::Delete(&key)).await?;
        Ok(a == Answer::Flag(true))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, StateError> {
        let op = Op::Cas(&key, expected.as_deref(), value.as_deref(), ttl(ttl_ms));
        let a = self.state_op(op).await?;
        Ok(a == Answer::Flag(true))
    }
}
