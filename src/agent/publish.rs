//! Publishing what a converge or a cluster pass found: the status file
//! (read by `sightline status`) and sightline's own metrics. Both live on
//! tmpfs and are written without fsync, and only when their content
//! changed.

use std::time::SystemTime;

use anyhow::{Context, Result};
use tracing::warn;

use super::Ctx;
use super::cluster::ClusterOutcome;
use super::converge::{Mode, Outcome};
use super::metrics;
use super::status::{LastConverge, Status};
use crate::config::LoadedConfig;
use crate::state::State;

/// Records a converge in the status file and the metrics. Failing to
/// publish never fails the converge: it is logged.
pub fn publish(ctx: &Ctx, cfg: &LoadedConfig, mode: Mode, o: &Outcome) {
    let mut st = Status::read(&ctx.root, &cfg.config).unwrap_or_default();
    st.version = env!("CARGO_PKG_VERSION").into();
    if mode == Mode::Daemon {
        st.daemon_pid = Some(std::process::id());
    }
    let at = crate::clock::rfc3339(o.finished_at);
    st.last_converge = Some(LastConverge {
        at: at.clone(),
        by: mode.name().into(),
        ok: o.result.is_ok(),
        duration_ms: o.duration.as_millis() as u64,
        changes: o
            .result
            .as_ref()
            .map(|r| {
                r.plan
                    .changes
                    .iter()
                    .filter(|c| c.is_visible())
                    .map(|c| format!("{} {}", c.verb(), c.path))
                    .collect()
            })
            .unwrap_or_default(),
        error: o.result.as_ref().err().map(ToString::to_string),
    });
    match &o.result {
        Ok(r) => {
            st.pending_effects = r.pending_after.clone();
            st.warnings = r.plan.warnings.clone();
            st.tier = Some(r.decisions.tier.value.as_str().into());
            st.runtime_security = Some(r.decisions.runtime_security.value.name().into());
            st.alerting_configured = cfg.config.has_alert_channel();
            st.errors.clear();
        }
        Err(e) => st.errors = vec![e.to_string()],
    }
    st.updated_at = at;
    write(ctx, cfg, &st, o.finished_at, o.state.as_ref());
}

/// Records the cluster pass in the status file and the metrics.
pub fn publish_cluster(ctx: &Ctx, cfg: &LoadedConfig, outcome: &ClusterOutcome) {
    let mut st = Status::read(&ctx.root, &cfg.config).unwrap_or_default();
    st.cluster = Some(outcome.line());
    st.stages = outcome.stage_statuses();
    if let Some(v) = outcome.view() {
        st.cluster_view = Some(v.clone());
    }
    let converged_at = last_converge_time(&st);
    write(ctx, cfg, &st, converged_at, None);
}

/// Records an error that did not come from a converge (e.g. a bad reload).
pub fn record_error(ctx: &Ctx, cfg: &LoadedConfig, error: &str) {
    let mut st = Status::read(&ctx.root, &cfg.config).unwrap_or_default();
    st.updated_at = crate::clock::now_rfc3339();
    st.errors = vec![error.to_string()];
    if let Err(e) = st.write(&ctx.root, &cfg.config) {
        warn!(error = %format!("{e:#}"), "could not write the status file");
    }
}

/// Writes the status file and the metrics; `state` is the converge's own
/// copy when it has one (else state.json is read).
fn write(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    st: &Status,
    converged_at: SystemTime,
    state: Option<&State>,
) {
    let result = (|| -> Result<()> {
        st.write(&ctx.root, &cfg.config)?;
        let loaded;
        let state = match state {
            Some(s) => s,
            None => {
                loaded = State::load(&ctx.root, &cfg.config).unwrap_or_default();
                &loaded
            }
        };
        let text = metrics::render(state, st, converged_at, metrics::own_rss());
        crate::throttle::write(&ctx.root, &cfg.config.daemon.metrics_file, &text)
            .context("writing sightline's metrics")
    })();
    if let Err(e) = result {
        warn!(error = %format!("{e:#}"), "could not write status or metrics");
    }
}

/// The time of the last converge the status file records.
fn last_converge_time(st: &Status) -> SystemTime {
    st.last_converge
        .as_ref()
        .and_then(|c| crate::clock::parse_rfc3339(&c.at))
        .unwrap_or_else(SystemTime::now)
}
