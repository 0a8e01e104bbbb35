//! The daemon's notifier task: sightline's own notifications, beside the
//! converge loop and never in its way.

use std::time::Duration;

use tracing::warn;

use super::{Ctx, Status};
use crate::config::LoadedConfig;
use crate::notify::Notifier;
use crate::notify::observe::{ClusterView, StageView};

/// The cluster as the status file has it.
pub fn cluster_view(st: &Status) -> ClusterView {
    ClusterView {
        tier: st.tier.clone(),
        stages: st
            .stages
            .iter()
            .map(|s| StageView {
                name: s.name.clone(),
                state: s.state,
                detail: s.detail.clone(),
            })
            .collect(),
    }
}

/// Starts the notifier as a local task: the unclean-restart check once,
/// then one observation every `[notify] poll_seconds`. Delivery runs in its
/// own workers; this task only observes and queues. `first_start` is false
/// when the task is restarted after a reload (the boot was checked already).
pub fn spawn_notifier(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    first_start: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    if !cfg.config.notify_enabled() {
        return None;
    }
    let ctx = ctx.clone();
    let cfg = cfg.clone();
    Some(tokio::task::spawn_local(async move {
        let mut n = match Notifier::new(&ctx.root, &cfg, ctx.system_bus.as_deref()) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "sightline's own notifications are off");
                return;
            }
        };
        if first_start {
            n.on_start(crate::notify::now());
        }
        let mut tick =
            tokio::time::interval(Duration::from_secs(cfg.config.notify.poll_seconds.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cluster = Status::read(&ctx.root, &cfg.config)
                .ok()
                .map(|st| cluster_view(&st));
            n.observe_and_send(cluster.as_ref(), crate::notify::now())
                .await;
        }
    }))
}
