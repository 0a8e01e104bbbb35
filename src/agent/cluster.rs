//! One pass of the cluster layer, as `apply`, `plan`, `render` and the
//! daemon run it: render the stages this machine should have, then roll
//! them out through k3s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::coordination::{self, ClusterRole, ClusterView, Coordinated, Memory};
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

/// Whose decision the review commands show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionSource {
    /// This machine's: not a k3s server, a forced tier, or this server holds
    /// (or may take) the Lease and would decide now.
    Local,
    /// The one the Lease holder stored in the cluster ConfigMap.
    Cluster {
        /// Who holds the Lease.
        holder: String,
        /// Who wrote the decision.
        decided_by: String,
    },
    /// The cluster's could not be used: this machine's, and why.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl DecisionSource {
    /// `cluster_source` in `-o json`.
    pub fn name(&self) -> &'static str {
        match self {
            DecisionSource::Cluster { .. } => "cluster",
            DecisionSource::Local | DecisionSource::Unavailable { .. } => "local",
        }
    }

    /// `cluster_unavailable` in `-o json`.
    pub fn unavailable(&self) -> Option<&str> {
        match self {
            DecisionSource::Unavailable { reason } => Some(reason),
            _ => None,
        }
    }

    /// The line text output shows, if any.
    pub fn line(&self) -> Option<String> {
        match self {
            DecisionSource::Local => None,
            DecisionSource::Cluster { holder, decided_by } => Some(format!(
                "cluster decision: the one {decided_by} stored in ConfigMap kube-system/{} ({holder} holds the Lease)",
                crate::k3s::configmap::CLUSTER_CONFIGMAP
            )),
            DecisionSource::Unavailable { reason } => Some(format!(
                "cluster decision unavailable ({reason}): showing this machine's own"
            )),
        }
    }
}

/// The stages `plan` and `render` show: on a server that another holds the
/// Lease against, those rendered from the cluster's decision (as `apply`
/// places them); else this machine's. Writes nothing.
pub async fn review_stages(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    tier: Option<Tier>,
) -> Result<(Vec<RenderedStage>, Bundle, bool, DecisionSource)> {
    let local = |source| -> Result<_> {
        let (stages, bundle, ephemeral) = desired_stages(root, cfg, facts, tier, false)?;
        Ok((stages, bundle, ephemeral, source))
    };
    if tier.is_some() || facts.k3s.role != K3sRole::Server {
        return local(DecisionSource::Local);
    }
    match coordination::held_decision(root, cfg, facts).await {
        Ok(Some((rec, holder))) => {
            let (secrets, ephemeral) = crate::bundle::secrets::load(root, &cfg.config, false)?;
            let (stages, bundle) = coordination::render_cluster_stages(
                root,
                &cfg.config,
                facts,
                &rec.decision,
                &secrets,
            )?;
            Ok((
                stages,
                bundle,
                ephemeral,
                DecisionSource::Cluster {
                    holder,
                    decided_by: rec.decided_by,
                },
            ))
        }
        Ok(None) => local(DecisionSource::Local),
        Err(reason) => local(DecisionSource::Unavailable { reason }),
    }
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

/// A rollout and where this server stands in the cluster. It dereferences
/// to the [`RolloutReport`], so callers read `result` and `stages` as before.
#[derive(Debug, Clone, Serialize)]
pub struct LedRollout {
    /// The rollout.
    #[serde(flatten)]
    pub report: RolloutReport,
    /// The cluster view (None before the API answered).
    pub view: Option<Box<ClusterView>>,
}

impl std::ops::Deref for LedRollout {
    type Target = RolloutReport;
    fn deref(&self) -> &RolloutReport {
        &self.report
    }
}

/// What a cluster pass found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "cluster", rename_all = "snake_case")]
pub enum ClusterOutcome {
    /// No rollout from this node: not a k3s server, another server holds
    /// the Lease, or this node's bundle differs from the cluster's.
    Skipped {
        /// Why.
        reason: String,
        /// Where this node stands in the cluster, when known.
        view: Option<Box<ClusterView>>,
    },
    /// This server holds the Lease and ran the rollout (or found the API unreachable).
    Rollout(LedRollout),
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

    /// Where this node stands in the cluster, when known.
    pub fn view(&self) -> Option<&ClusterView> {
        match self {
            ClusterOutcome::Rollout(r) => r.view.as_deref(),
            ClusterOutcome::Skipped { view, .. } => view.as_deref(),
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
            ClusterOutcome::Skipped { reason, .. } => format!("skipped: {reason}"),
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

/// Waits for /readyz up to the configured time (CLI) or tries once (daemon).
async fn wait_ready(api: &crate::k3s::K3sApi, timing: &Timing, wait: bool) -> Result<(), String> {
    let deadline = Instant::now()
        + if wait {
            timing.api_wait
        } else {
            Duration::ZERO
        };
    loop {
        match api.readyz().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(timing.poll.max(Duration::from_millis(500))).await,
        }
    }
}

/// Rolls the stages out (or says why not). On a server, the Lease decides
/// who rolls out: see [`super::coordination`]. `memory` carries the Lease
/// and what was read with it from one pass to the next.
pub async fn run_cluster(
    ctx: &super::Ctx,
    cfg: &LoadedConfig,
    progress: Progress,
    wait_for_api: bool,
    memory: &Memory,
) -> Result<ClusterOutcome> {
    let root = &ctx.root;
    let (facts, cfg) = super::observe(ctx, cfg).await;
    let cfg = &cfg;
    let me = coordination::node_name(&facts);
    if let Some(reason) = not_applicable(&facts) {
        let view = (facts.k3s.role == K3sRole::Agent)
            .then(|| Box::new(ClusterView::bare(&me, ClusterRole::Agent, None)));
        return Ok(ClusterOutcome::Skipped { reason, view });
    }
    let timing = Timing::from_config(&cfg.config);
    let waiting = Instant::now();
    let unreachable = |reason: String, waiting: Instant| -> Result<ClusterOutcome> {
        let (local, _, _) = desired_stages(root, cfg, &facts, None, true)?;
        Ok(unreachable(&local, reason, waiting))
    };
    let api = crate::k3s::K3sApi::from_config(root, &cfg.config).map_err(|e| format!("{e:#}"));
    let ready = match &api {
        Ok(a) => wait_ready(a, &timing, wait_for_api).await,
        Err(e) => Err(e.clone()),
    };
    let (api, mut holding) = match (api, ready) {
        (Ok(api), Ok(())) => {
            match coordination::coordinate(&api, root, cfg, &facts, memory).await {
                Ok(Coordinated::Holder(h)) => (api, *h),
                Ok(Coordinated::Done(view)) => {
                    let reason = match (&view.role, &view.lease) {
                        (ClusterRole::Skewed, _) => {
                            view.detail.clone().unwrap_or_else(|| "version skew".into())
                        }
                        (_, Some(l)) => format!(
                            "{} holds the Lease kube-system/sightline and runs the rollout; {}",
                            l.holder,
                            match (view.files_match, &view.detail) {
                                (_, Some(d)) => d.clone(),
                                (Some(true), None) => "this server's stage files match it".into(),
                                _ => "this server's stage files do not match it".into(),
                            }
                        ),
                        (_, None) => view.detail.clone().unwrap_or_default(),
                    };
                    return Ok(ClusterOutcome::Skipped {
                        reason,
                        view: Some(Box::new(view)),
                    });
                }
                Err(e) => match e.downcast_ref::<crate::k3s::ApiError>() {
                    Some(crate::k3s::ApiError::Unreachable { .. }) => {
                        return unreachable(format!("{e:#}"), waiting);
                    }
                    _ => return Err(e.context("coordinating with the other k3s servers")),
                },
            }
        }
        (_, Err(reason)) | (Err(reason), _) => return unreachable(reason, waiting),
    };
    let stages = std::mem::take(&mut holding.stages);
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
    let r = Rollout {
        root,
        cfg: &cfg.config,
        api: Ok(api.clone()),
        stages,
        airgap_charts: airgap,
        timing,
        progress,
        wait_for_api,
        skipped_by_k3s,
    };
    let report = tokio::select! {
        r = r.run() => r?,
        lost = coordination::keep_renewing(&api, root, &cfg.config, &me, memory) => {
            tracing::warn!(reason = %lost, "stopped the rollout: this server no longer holds the Lease");
            let mut view = holding.view.clone();
            view.role = ClusterRole::Follower;
            view.detail = Some(lost.clone());
            return Ok(ClusterOutcome::Skipped { reason: format!("rollout stopped: {lost}"), view: Some(Box::new(view)) });
        }
    };
    if let Err(e) = coordination::publish_files(&api, root, &cfg.config, &mut holding).await {
        memory.forget(root, &cfg.config);
        tracing::warn!(error = %format!("{e:#}"), "could not record the stage files in the cluster ConfigMap");
    }
    Ok(ClusterOutcome::Rollout(LedRollout {
        report,
        view: Some(Box::new(holding.view)),
    }))
}

/// The API did not answer: nothing is known about the cluster, nothing is
/// written; the stages this machine would have are listed as pending.
fn unreachable(stages: &[RenderedStage], reason: String, since: Instant) -> ClusterOutcome {
    ClusterOutcome::Rollout(LedRollout {
        report: RolloutReport::not_started(
            stages,
            RolloutResult::ApiUnreachable {
                reason,
                waited_ms: since.elapsed().as_millis() as u64,
            },
            None,
        ),
        view: None,
    })
}
