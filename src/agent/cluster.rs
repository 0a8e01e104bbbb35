//! One pass of the cluster layer, as `apply`, `plan`, `render` and the
//! daemon run it: render the stages this machine should have, then roll
//! them out through k3s.

use anyhow::{Context, Result};
use serde::Serialize;

use super::status::StageStatus;
use crate::bundle::{Bundle, RenderedStage, StageInputs, render_stages};
use crate::config::{Config, LoadedConfig};
use crate::decide::{Decisions, Tier, decide_runtime_security};
use crate::facts::{Facts, K3sRole};
use crate::rollout::{Progress, Rollout, RolloutReport, RolloutResult, Timing};
use crate::state::State;
use crate::sysroot::Sysroot;

/// The chart archives in `[bundle] airgap_charts_dir`, if configured.
pub fn airgap_charts(root: &Sysroot, cfg: &Config) -> Result<Option<Vec<String>>> {
    let Some(dir) = &cfg.bundle.airgap_charts_dir else {
        return Ok(None);
    };
    let rd = std::fs::read_dir(root.path(dir))
        .with_context(|| format!("reading bundle.airgap_charts_dir {dir}"))?;
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tgz"))
        .collect();
    v.sort();
    Ok(Some(v))
}

/// `<release>.yaml` files in `[bundle] values_dir`.
pub fn user_values(
    root: &Sysroot,
    cfg: &Config,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let dir = &cfg.bundle.values_dir;
    let rd = match std::fs::read_dir(root.path(dir)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading bundle.values_dir {dir}")),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_suffix(".yaml")
            && !name.starts_with('.')
        {
            let text = std::fs::read_to_string(e.path())
                .with_context(|| format!("reading {dir}/{name}"))?;
            out.insert(release.to_string(), text);
        }
    }
    Ok(out)
}

/// The stage files this machine should have (or those of a forced tier).
/// Returns the stages, the bundle, and whether the Grafana password is a
/// one-off (it could not be stored).
pub fn desired_stages(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    tier: Option<Tier>,
    persist_secrets: bool,
) -> Result<(Vec<RenderedStage>, Bundle, bool)> {
    let state = State::load(root, &cfg.config).unwrap_or_default();
    let mut d = Decisions::make(cfg, facts, state.tier.as_ref());
    if let Some(t) = tier {
        d.tier.value = t;
        d.runtime_security = decide_runtime_security(cfg, facts, t);
    }
    let bundle = Bundle::load(root, &cfg.config)?;
    let (secrets, ephemeral) = crate::bundle::secrets::load(root, &cfg.config, persist_secrets)?;
    let inputs = StageInputs {
        cfg: &cfg.config,
        facts,
        tier: d.tier.value,
        runtime_security: d.runtime_security.value,
        secrets: &secrets,
        airgap_charts: airgap_charts(root, &cfg.config)?,
        network_policies: d.network_policies.value,
        user_values: user_values(root, &cfg.config)?,
    };
    Ok((render_stages(&bundle, &inputs)?, bundle, ephemeral))
}

/// Why the cluster layer does not apply to this machine, if it does not.
pub fn not_applicable(facts: &Facts) -> Option<String> {
    match facts.k3s.role {
        K3sRole::Server => None,
        K3sRole::Agent => Some(
            "this is a k3s agent node: the in-cluster stack is rolled out from a server node, so sightline leaves the cluster alone here".into(),
        ),
        K3sRole::None => Some("k3s is not installed on this machine, so there is no cluster to roll the stack out to".into()),
    }
}

/// What a cluster pass found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "cluster", rename_all = "snake_case")]
pub enum ClusterOutcome {
    /// Not a k3s server.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The rollout ran (or found the API unreachable).
    Rollout(RolloutReport),
}

impl ClusterOutcome {
    /// Each stage's state, for the status file.
    pub fn stage_statuses(&self) -> Vec<StageStatus> {
        match self {
            ClusterOutcome::Rollout(r) => r
                .stages
                .iter()
                .map(|s| StageStatus {
                    name: s.name.clone(),
                    state: s.state,
                    detail: s.detail.clone(),
                })
                .collect(),
            ClusterOutcome::Skipped { .. } => Vec::new(),
        }
    }

    /// The running k3s version, when the API answered (for `status`).
    pub fn k3s_version(&self) -> Option<&crate::k3s::K3sVersion> {
        match self {
            ClusterOutcome::Rollout(r) => r.k3s_version.as_ref(),
            ClusterOutcome::Skipped { .. } => None,
        }
    }

    /// One line for status and logs.
    pub fn line(&self) -> String {
        match self {
            ClusterOutcome::Skipped { reason } => format!("skipped: {reason}"),
            ClusterOutcome::Rollout(r) => match &r.result {
                RolloutResult::Done => format!("all {} stage(s) healthy", r.stages.len()),
                RolloutResult::Failed { stage, reason } => {
                    format!("stage {stage} failed: {reason}")
                }
                RolloutResult::ApiUnreachable { reason, .. } => {
                    format!("pending: the k3s API does not answer ({reason})")
                }
                RolloutResult::K3sTooOld(too_old) => {
                    format!("not started: {too_old}; the host layer is applied")
                }
            },
        }
    }
}

/// Rolls the stages out (or says why not).
pub async fn run_cluster(
    ctx: &super::Ctx,
    cfg: &LoadedConfig,
    progress: Progress,
    wait_for_api: bool,
) -> Result<ClusterOutcome> {
    let root = &ctx.root;
    let (facts, cfg) = super::observe(ctx, cfg).await;
    let cfg = &cfg;
    if let Some(reason) = not_applicable(&facts) {
        return Ok(ClusterOutcome::Skipped { reason });
    }
    let (stages, _bundle, _) = desired_stages(root, cfg, &facts, None, true)?;
    let skipped_by_k3s = stages
        .iter()
        .filter_map(|s| {
            facts
                .k3s
                .stage_skip_reason(&cfg.config.paths.manifests_dir, &s.file_name)
                .map(|why| (s.stage.name.clone(), why))
        })
        .collect();
    let airgap: Vec<String> = match (
        &cfg.config.bundle.airgap_charts_dir,
        airgap_charts(root, &cfg.config)?,
    ) {
        (Some(dir), Some(files)) => files.into_iter().map(|f| format!("{dir}/{f}")).collect(),
        _ => Vec::new(),
    };
    let api = crate::k3s::K3sApi::from_config(root, &cfg.config).map_err(|e| format!("{e:#}"));
    let r = Rollout {
        root,
        cfg: &cfg.config,
        api,
        stages,
        airgap_charts: airgap,
        timing: Timing::from_config(&cfg.config),
        progress,
        wait_for_api,
        skipped_by_k3s,
    };
    Ok(ClusterOutcome::Rollout(r.run().await?))
}
