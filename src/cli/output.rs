//! Text layout shared by the commands.

/// `  key            value` with a fixed key column.
pub fn kv(key: &str, value: &str) -> String {
    format!("  {key:<18}{value}\n")
}

/// Indented `- item` lines.
pub fn bullet_list(items: &[String], indent: usize) -> String {
    items
        .iter()
        .map(|i| format!("{}- {i}\n", " ".repeat(indent)))
        .collect()
}

use crate::agent::{StageAction, StagePlan};
use crate::config::LoadedConfig;
use crate::engine::{Change, ChangeKind, ConvergeReport};
use crate::facts::Facts;

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

/// One line per change: verb, path, mode.
pub fn change_line(c: &Change) -> String {
    let detail = match &c.kind {
        ChangeKind::ChmodDir { from, .. } | ChangeKind::Chmod { from, .. } => {
            format!("{} -> {}", mode(*from), mode(c.mode))
        }
        ChangeKind::Remove { restore: Some(b) } => format!("from {b}"),
        ChangeKind::Remove { restore: None } => String::new(),
        ChangeKind::Update { backup: true, .. } => format!("{} (original kept)", mode(c.mode)),
        _ => mode(c.mode),
    };
    format!("  {:<8} {} {}\n", c.verb(), c.path, detail).replace(" \n", "\n")
}

/// The decisions block shared by plan and detect.
fn decisions_block(facts: &Facts, r: &ConvergeReport) -> String {
    let d = &r.decisions;
    let rs = match d.runtime_security.value.falco_driver() {
        Some(drv) => format!("falco ({} driver)", drv.chart_value()),
        None => d.runtime_security.value.name().into(),
    };
    let mut s = format!(
        "machine: {} · {} · {}\n",
        facts.board.as_deref().unwrap_or("unknown board"),
        facts.arch,
        facts.os.pretty_name.as_deref().unwrap_or(&facts.os.id)
    );
    s.push_str(&format!("tier: {}\n", d.tier.value));
    s.push_str(&bullet_list(&d.tier.reasons, 2));
    s.push_str(&format!("runtime security: {rs}\n"));
    s.push_str(&bullet_list(&d.runtime_security.reasons, 2));
    s
}

/// `plan` as text.
pub fn render_plan(facts: &Facts, r: &ConvergeReport, cfg: &LoadedConfig) -> String {
    let mut s = decisions_block(facts, r);
    let p = &r.plan;
    let visible: Vec<&Change> = p.changes.iter().filter(|c| c.is_visible()).collect();
    if visible.is_empty() {
        s.push_str("\nhost: nothing to change\n");
    } else {
        s.push_str(&format!("\nhost changes ({}):\n", visible.len()));
        for c in &visible {
            s.push_str(&change_line(c));
        }
        for c in &visible {
            if let Some(d) = &c.diff {
                s.push('\n');
                s.push_str(d);
            }
        }
    }
    s.push_str(&effects_block(&p.effects, &p.pending_effects));
    if !p.skipped.is_empty() {
        s.push_str("\nnot applicable here:\n");
        for k in &p.skipped {
            s.push_str(&format!("  {:<8} {}\n", k.component.name(), k.reason));
        }
    }
    let mut warnings = p.warnings.clone();
    if !cfg.config.has_alert_channel() {
        warnings.push(
            "no alert channel configured: alerts only show in Grafana and nobody will be woken"
                .into(),
        );
    }
    s.push_str(&warnings_block(&warnings));
    s
}

fn effects_block(due: &[crate::effects::Effect], pending: &[crate::effects::Effect]) -> String {
    let mut s = String::new();
    if !due.is_empty() {
        s.push_str("\nfollow-up effects due:\n");
        for e in due {
            s.push_str(&format!("  - {e}\n"));
        }
    }
    if !pending.is_empty() {
        s.push_str("\npending from an earlier run:\n");
        for e in pending {
            s.push_str(&format!("  - {e}\n"));
        }
    }
    s
}

fn warnings_block(w: &[String]) -> String {
    if w.is_empty() {
        return String::new();
    }
    let mut s = String::from("\nwarnings:\n");
    for x in w {
        s.push_str(&format!("  ! {x}\n"));
    }
    s
}

/// `apply` as text: what changed, which effects ran or are still listed.
pub fn render_apply(r: &ConvergeReport) -> String {
    let mut s = String::new();
    if let Some(rec) = &r.recovered {
        s.push_str(&format!("recovered: {rec}\n"));
    }
    let visible: Vec<&Change> = r.plan.changes.iter().filter(|c| c.is_visible()).collect();
    if visible.is_empty() {
        s.push_str("host: already converged, nothing changed\n");
    } else {
        s.push_str(&format!("host: {} change(s)\n", visible.len()));
        for c in visible {
            s.push_str(&change_line(c));
        }
    }
    if r.effects_run.is_empty() {
        s.push_str(&effects_block(&r.plan.effects, &r.plan.pending_effects));
        if let Some(why) = &r.effects_skipped_because
            && !r.plan.all_effects().is_empty()
        {
            s.push_str(&format!("  ({why})\n"));
        }
    } else {
        s.push_str("\nfollow-up effects:\n");
        for e in &r.effects_run {
            s.push_str(&format!("  - {}: {}\n", e.effect, e.outcome));
        }
    }
    s.push_str(&warnings_block(&r.plan.warnings));
    s
}

/// `plan --json`.
pub fn report_json(facts: &Facts, r: &ConvergeReport, cfg: &LoadedConfig) -> serde_json::Value {
    let warnings = super::detect::warnings(cfg, facts, &r.decisions);
    serde_json::json!({
        "decisions": super::detect::to_json(facts, &r.decisions, &warnings),
        "host": r.plan,
        "converged": r.plan.is_converged(),
    })
}

/// The cluster part of `plan`.
pub fn render_cluster_plan(stages: &[StagePlan]) -> String {
    let mut s = String::from("\ncluster stages:\n");
    for st in stages {
        match (st.action, &st.reason) {
            (StageAction::Skipped, Some(why)) => s.push_str(&format!("  skipped: {why}\n")),
            (action, _) => s.push_str(&format!("  {:<9} {}\n", action.name(), st.file)),
        }
    }
    s
}
