//! The state of a running gateway that reloads change, shared by the gateway and its reloads.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::build::Groups;
use super::listener::LiveListener;
use crate::admin::AdminState;
use crate::config::Config;
use crate::server::worker;
use crate::telemetry::Registry;

/// Everything that a reload may change, and what it needs to do so.
pub(super) struct Live {
    pub(super) config: Config,
    pub(super) workers: Vec<worker::Worker>,
    pub(super) groups: Groups,
    pub(super) listeners: Vec<LiveListener>,
    pub(super) registry: Arc<Registry>,
    pub(super) admin: Arc<AdminState>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) exit: watch::Receiver<bool>,
}

/// The live state, locked (a panic while it was held does not poison it for good).
pub(super) fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}
