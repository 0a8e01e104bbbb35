//! The application layer: what `sightline` does, as the command line and
//! the daemon both run it.
//!
//! It holds the context (sysroot, bus address), connects the live adapters
//! (systemd over D-Bus, the k3s API) to the engine, runs one converge of the
//! host layer and one pass of the cluster layer, and publishes status and
//! metrics. `cli` and `daemon` sit on top of it; nothing below imports it.

mod cluster;
mod converge;
pub mod coordination;
mod live;
mod machine;
mod metrics;
mod notifications;
mod plan;
mod publish;
mod status;
pub mod uninstall;

use anyhow::Result;

pub use cluster::{
    ClusterOutcome, DecisionSource, LedRollout, airgap_charts, desired_stages, not_applicable,
    review_stages, run_cluster,
};
pub use converge::{
    CLI_LOCK_WAIT, ConvergeError, Mode, Outcome, converge_once, is_read_only_fs, lock,
};
pub use live::{LiveOps, connect_ops};
pub use machine::{observe, observe_blocking, observe_keeping_bus};
pub use metrics::render as render_metrics;
pub use notifications::{cluster_view, spawn_notifier};
pub use plan::{StageAction, StagePlan, cluster_plan};
pub use publish::{publish_cluster, record_error};
pub use status::{LastConverge, StageStatus, Status};

use crate::sysroot::Sysroot;

/// What every command gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The sysroot.
    pub root: Sysroot,
    /// D-Bus address of the system bus to use instead of the default.
    pub system_bus: Option<String>,
}

impl Ctx {
    /// Fails unless the caller may change this root.
    pub fn require_root_user(&self, what: &str) -> Result<()> {
        if self.root.is_host() && !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "`sightline {what}` must run as root: it writes under /etc and /var and talks to systemd. Run it with sudo, or use `sightline plan` to see what it would do"
            );
        }
        Ok(())
    }
}

/// A runtime for one command: single-threaded, as the daemon's.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
