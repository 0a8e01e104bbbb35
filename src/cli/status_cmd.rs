//! `sightline status`.

use super::out;
use anyhow::Result;

use super::{EXIT_DEGRADED, EXIT_ERROR, EXIT_OK};
use crate::agent::Ctx;
use crate::agent::Status;
use crate::state::StageState;

/// Runs `status`.
pub fn run(ctx: &Ctx, json: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let st = Status::read(&ctx.root, &cfg.config)?;
    if json {
        super::print_json(&st)?;
    } else {
        out::out!("{}", render(&st, daemon_alive(st.daemon_pid, ctx)));
        // Open events and the last delivery per channel of sightline's own
        // notifications.
        out::out!("{}", super::notify_cmd::status_section(ctx, &cfg.config));
    }
    Ok(exit_code(&st))
}

/// 1 when the last run failed, 4 (degraded) while a stage is failed,
/// pending or waiting, 0 otherwise: a check such as `sightline status ||
/// alert` sees what the text says. Effects listed by `apply --no-restart`
/// are the operator's choice and stay 0.
pub fn exit_code(st: &Status) -> u8 {
    let stage_not_healthy = st
        .stages
        .iter()
        .any(|s| !matches!(s.state, StageState::Healthy | StageState::Pruned));
    if !st.errors.is_empty() {
        EXIT_ERROR
    } else if stage_not_healthy {
        EXIT_DEGRADED
    } else {
        EXIT_OK
    }
}

fn daemon_alive(pid: Option<u32>, ctx: &Ctx) -> Option<bool> {
    // Only meaningful for the running machine.
    if !ctx.root.is_host() {
        return None;
    }
    pid.map(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// The readable status.
pub fn render(st: &Status, alive: Option<bool>) -> String {
    let mut s = String::new();
    match (st.daemon_pid, alive) {
        (Some(p), Some(true)) | (Some(p), None) => s.push_str(&format!(
            "daemon: running (pid {p}), sightline {}\n",
            st.version
        )),
        (Some(p), Some(false)) => s.push_str(&format!(
            "daemon: NOT running (last pid {p}); start it with `systemctl start sightline`\n"
        )),
        (None, _) => s.push_str("daemon: never ran; status comes from `sightline apply`\n"),
    }
    if let Some(c) = &st.last_converge {
        s.push_str(&format!(
            "last converge: {} by {} — {} in {} ms\n",
            c.at,
            c.by,
            if c.ok {
                "ok".to_string()
            } else {
                format!("FAILED: {}", c.error.as_deref().unwrap_or("unknown"))
            },
            c.duration_ms
        ));
        for ch in &c.changes {
            s.push_str(&format!("  {ch}\n"));
        }
    }
    if let (Some(t), Some(r)) = (&st.tier, &st.runtime_security) {
        s.push_str(&format!("tier: {t} · runtime security: {r}\n"));
    }
    if !st.pending_effects.is_empty() {
        s.push_str("pending effects:\n");
        for e in &st.pending_effects {
            s.push_str(&format!("  - {e}\n"));
        }
    }
    if let Some(c) = &st.cluster {
        s.push_str(&format!("cluster: {c}\n"));
    }
    if let Some(v) = &st.cluster_view {
        s.push_str(&format!("node: {}\n", v.line()));
        if let Some(d) = &v.decision {
            s.push_str(&format!(
                "cluster decision: {d}{}\n",
                v.cluster_version
                    .as_deref()
                    .map(|x| format!(" (sightline {x})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(d) = &v.detail {
            s.push_str(&format!("! {d}\n"));
        }
    }
    for stage in &st.stages {
        s.push_str(&format!(
            "  {:<28} {}{}\n",
            stage.name,
            stage.state,
            stage
                .detail
                .as_deref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default()
        ));
    }
    if !st.alerting_configured {
        s.push_str(
            "! no alert channel configured: alerts only show in Grafana and nobody will be woken\n",
        );
    }
    for w in &st.warnings {
        s.push_str(&format!("! {w}\n"));
    }
    for e in &st.errors {
        s.push_str(&format!("error: {e}\n"));
    }
    s
}
