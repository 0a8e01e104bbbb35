//! `sightline detect`.

use anyhow::Result;
use serde_json::json;

use super::output::{bullet_list, kv};
use crate::agent::Ctx;
use crate::config::LoadedConfig;
use crate::decide::{Decisions, gib};
use crate::facts::{Facts, K3sRole};
use crate::state::State;

/// Facts plus decisions as the JSON `detect --json` prints.
pub fn to_json(facts: &Facts, d: &Decisions, warnings: &[String]) -> serde_json::Value {
    json!({
        "tier": d.tier.value,
        "tier_reasons": d.tier.reasons,
        "tier_overridden": d.tier.overridden,
        "runtime_security": d.runtime_security.value,
        "falco_driver": d.runtime_security.value.falco_driver(),
        "runtime_security_reasons": d.runtime_security.reasons,
        "runtime_security_overridden": d.runtime_security.overridden,
        "network_policies": d.network_policies.value,
        "network_policies_reasons": d.network_policies.reasons,
        "board": facts.board,
        "board_kind": facts.board_kind,
        "arch": facts.arch,
        "cpus": facts.cpus,
        "cpu_model": facts.cpu.model,
        "virtualized": facts.cpu.virtualized,
        "os": facts.os,
        "memory": facts.memory,
        "k3s": facts.k3s,
        "cni": facts.cni.name(),
        "btf": facts.btf,
        "watchdog": facts.watchdog,
        "throttle_source": facts.throttle_source.name(),
        "gpu": facts.gpu,
        "cgroups": facts.cgroups,
        "cgroups_ready": facts.cgroups.is_ready(),
        "warnings": warnings,
    })
}

/// Warnings worth showing wherever decisions are shown.
pub fn warnings(cfg: &LoadedConfig, facts: &Facts, d: &Decisions) -> Vec<String> {
    let mut w = Vec::new();
    if !cfg.config.has_alert_channel() {
        w.push(
            "no alert channel configured ([alerting] ntfy_url, discord_webhook_url or email_to): alerts only show in Grafana and nobody will be woken".into(),
        );
    }
    w.extend(
        d.tier
            .reasons
            .iter()
            .chain(&d.runtime_security.reasons)
            .filter(|r| r.starts_with("warning:"))
            .cloned(),
    );
    // What k3s itself will not do as asked (command-line audit flags are
    // warned about by the host layer, which sees the desired flags).
    w.extend(facts.k3s.problems.iter().cloned());
    w.extend(facts.k3s.skipped_stages.iter().map(ToString::to_string));
    w
}

/// Runs `detect`.
pub fn run(ctx: &Ctx, json_out: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let (facts, cfg) = crate::agent::observe_blocking(ctx, &cfg)?;
    let (state, unreadable) = match State::load(&ctx.root, &cfg.config) {
        Ok(s) => (s, None),
        Err(e) => (
            State::default(),
            Some(format!(
                "{e:#}; the tier shown is measured now, not the one sightline keeps"
            )),
        ),
    };
    let d = Decisions::make(&cfg, &facts, state.tier.as_ref());
    let mut w = warnings(&cfg, &facts, &d);
    w.extend(unreadable);
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&facts, &d, &w))?
        );
        return Ok(0);
    }
    print!("{}", render(&facts, &d, &w));
    Ok(0)
}

/// The readable table.
pub fn render(facts: &Facts, d: &Decisions, warnings: &[String]) -> String {
    let mut s = machine_block(facts);
    s.push_str(&decisions_block(d));
    if !warnings.is_empty() {
        s.push_str("warnings\n");
        for w in warnings {
            s.push_str(&format!("  ! {w}\n"));
        }
    }
    s
}

fn machine_block(facts: &Facts) -> String {
    let os = match (&facts.os.pretty_name, &facts.os.version_id) {
        (Some(p), _) => p.clone(),
        (None, Some(v)) => format!("{} {v}", facts.os.id),
        _ => facts.os.id.clone(),
    };
    let cpu = format!(
        "{} ({} CPUs{}{})",
        facts.arch,
        facts.cpus,
        facts
            .cpu
            .model
            .as_deref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default(),
        if facts.cpu.virtualized {
            ", virtual machine"
        } else {
            ""
        }
    );
    let k3s = match facts.k3s.role {
        K3sRole::None => "not installed".to_string(),
        role => format!(
            "{} · {} ({}{})",
            serde_json::to_value(role)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            facts.k3s.unit.as_deref().unwrap_or("no unit"),
            facts.k3s.unit_file.as_deref().unwrap_or("no unit file"),
            facts
                .k3s
                .unit_from
                .map(|u| format!(", {}", json_name(u)))
                .unwrap_or_default(),
        ),
    };
    let k3s_config = match facts.k3s.role {
        K3sRole::None => "-".to_string(),
        _ => facts.k3s.config.describe(),
    };
    let wd = match &facts.watchdog {
        None => "none".into(),
        Some(w) => format!(
            "{} {} (max {})",
            w.device,
            w.identity.as_deref().unwrap_or("unknown driver"),
            w.max_timeout_s
                .map_or("unknown".into(), |m| format!("{m} s"))
        ),
    };
    let gpu = facts
        .gpu
        .as_ref()
        .map_or("none".into(), |g| format!("{} ×{}", g.vendor, g.devices));
    let memory = format!(
        "{} total, {} available",
        gib(facts.memory.total_bytes),
        gib(facts.memory.available_bytes)
    );
    let board = facts.board.clone().unwrap_or_else(|| "unknown".into());
    let btf = if facts.btf { "yes" } else { "no" };
    let cgroups = facts.cgroups.report_lines();
    let mut s = String::from("machine\n");
    for (k, v) in [
        ("board", board.as_str()),
        ("cpu", &cpu),
        ("os", &os),
        ("memory", &memory),
        ("k3s", &k3s),
        ("k3s config", &k3s_config),
        ("cni", &facts.cni.name()),
        ("kernel BTF", btf),
        ("watchdog", &wd),
        ("throttle", facts.throttle_source.name()),
        ("gpu", &gpu),
    ] {
        s.push_str(&kv(k, v));
    }
    // What k3s needs from the kernel, and the fix when it is missing.
    for line in cgroups {
        let line = line.strip_prefix("cgroups: ").unwrap_or(&line).to_string();
        if let Some(fix) = line.strip_prefix("  ") {
            s.push_str(&format!("{:20}{fix}\n", ""));
        } else {
            s.push_str(&kv("cgroups", &line));
        }
    }
    s
}

fn decisions_block(d: &Decisions) -> String {
    let mut s = String::from("decisions\n");
    s.push_str(&kv("tier", d.tier.value.as_str()));
    s.push_str(&bullet_list(&d.tier.reasons, 20));
    let rs = match d.runtime_security.value.falco_driver() {
        Some(drv) => format!("falco ({} driver)", drv.chart_value()),
        None => d.runtime_security.value.name().into(),
    };
    s.push_str(&kv("runtime security", &rs));
    s.push_str(&bullet_list(&d.runtime_security.reasons, 20));
    let np = if d.network_policies.value {
        "yes"
    } else {
        "no"
    };
    s.push_str(&kv("network policies", np));
    s.push_str(&bullet_list(&d.network_policies.reasons, 20));
    s
}

/// The serde name of a unit enum, as `--json` shows it.
fn json_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
