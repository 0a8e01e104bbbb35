//! The staged rollout of the bundle through k3s.
//!
//! Each stage file goes into the manifests directory under a dotfile temp
//! name k3s ignores, then is renamed into place. The next stage is written
//! only once the previous one is healthy. Stages that no longer apply (tier
//! or component change) are emptied so k3s prunes their objects, waited
//! for, then removed. Nothing is written on a k3s older than what the gates
//! and the prune rely on (`crate::k3s::version`).

pub mod gates;
pub(crate) mod helmchart;
pub(crate) mod kube;
pub(crate) mod progress;
mod prune;
mod stage;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::atomic::write_atomic;
use crate::bundle::RenderedStage;
use crate::config::Config;
use crate::k3s::{K3sApi, K3sVersion, TooOld};
use crate::lock::Lock;
use crate::state::{StageRecord, State};
use crate::sysroot::Sysroot;
pub use progress::Progress;

pub use crate::state::StageState;

/// What happened to one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Final state in this run.
    pub state: StageState,
    /// The reason (failed) or what it waits for.
    pub detail: Option<String>,
    /// Seconds spent.
    pub elapsed_s: f64,
}

/// How the rollout ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RolloutResult {
    /// Every stage is healthy.
    Done,
    /// A stage failed; later stages were not written.
    Failed {
        /// Which.
        stage: String,
        /// Why.
        reason: String,
    },
    /// The API did not answer; nothing was written.
    ApiUnreachable {
        /// Why.
        reason: String,
        /// How long it was waited for, in milliseconds.
        waited_ms: u64,
    },
    /// The running k3s lacks what the gates and pruning rely on; nothing was written.
    K3sTooOld(TooOld),
}

/// The whole rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// How it ended.
    pub result: RolloutResult,
    /// The running k3s version, once the API answered.
    pub k3s_version: Option<K3sVersion>,
    /// Each stage, in order (pruned ones first).
    pub stages: Vec<StageReport>,
}

impl RolloutReport {
    /// A rollout that wrote nothing: every stage pending.
    pub fn not_started(
        stages: &[RenderedStage],
        result: RolloutResult,
        k3s_version: Option<K3sVersion>,
    ) -> RolloutReport {
        RolloutReport {
            result,
            k3s_version,
            stages: stages
                .iter()
                .map(|s| StageReport {
                    name: s.stage.name.clone(),
                    state: StageState::Pending,
                    detail: None,
                    elapsed_s: 0.0,
                })
                .collect(),
        }
    }
}

/// Timeouts and polling.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Addon checksum gate.
    pub addon: Duration,
    /// Install job gate.
    pub job: Duration,
    /// Workloads gate.
    pub workloads: Duration,
    /// Pruning a removed stage.
    pub prune: Duration,
    /// Between polls.
    pub poll: Duration,
    /// How long to wait for an unreachable API.
    pub api_wait: Duration,
}

impl Timing {
    /// From the configuration.
    pub fn from_config(cfg: &Config) -> Timing {
        let r = &cfg.rollout;
        Timing {
            addon: Duration::from_secs(r.addon_timeout_seconds),
            job: Duration::from_secs(r.job_timeout_seconds),
            workloads: Duration::from_secs(r.workloads_timeout_seconds),
            prune: Duration::from_secs(r.prune_timeout_seconds),
            poll: Duration::from_millis(r.poll_interval_ms),
            api_wait: Duration::from_secs(cfg.k3s.api_wait_seconds),
        }
    }
}

/// Everything a rollout needs.
pub struct Rollout<'a> {
    /// The sysroot.
    pub root: &'a Sysroot,
    /// Configuration.
    pub cfg: &'a Config,
    /// The API client, or why there is none (no certificates yet).
    pub api: Result<K3sApi, String>,
    /// The stages that should exist, in order.
    pub stages: Vec<RenderedStage>,
    /// Air-gapped chart archives to copy into k3s's static directory (host paths).
    pub airgap_charts: Vec<String>,
    /// Timeouts.
    pub timing: Timing,
    /// Where progress goes.
    pub progress: Progress,
    /// Wait for an unreachable API up to `timing.api_wait` (CLI) or give up at once (daemon).
    pub wait_for_api: bool,
    /// Stages whose file k3s is told not to apply (`--disable`, a `.skip`
    /// file), by stage name, with the reason: reported at once rather than
    /// waited for until the Addon gate times out.
    pub skipped_by_k3s: std::collections::BTreeMap<String, String>,
}

impl Rollout<'_> {
    /// The state lock, for the short writes of a stage file and its
    /// record. Waiting for it never blocks the thread: the daemon's converge
    /// runs on the same one and may hold the lock across a k3s restart.
    pub(super) async fn lock(&self) -> Result<Lock> {
        Lock::acquire(
            &self.root.path(self.cfg.lock_path()),
            Duration::from_secs(600),
        )
        .await
    }

    pub(super) fn stage_host_path(&self, file: &str) -> String {
        format!("{}/{file}", self.cfg.paths.manifests_dir)
    }

    /// Runs the rollout to the end, a failure, or an unreachable API.
    pub async fn run(&self) -> Result<RolloutReport> {
        self.clean_temp_files();
        let mut reports = Vec::new();
        let waiting = Instant::now();
        let unreachable = |reason| RolloutResult::ApiUnreachable {
            reason,
            waited_ms: waiting.elapsed().as_millis() as u64,
        };
        let api = match self.wait_api().await {
            Ok(api) => api,
            Err(reason) => return Ok(self.not_started(unreachable(reason), None)),
        };
        let version = match api.version().await {
            Ok(v) => v,
            Err(e @ crate::k3s::ApiError::Unreachable { .. }) => {
                let reason = e.to_string();
                return Ok(self.not_started(unreachable(reason), None));
            }
            Err(e) => return Err(anyhow::Error::from(e).context("reading the k3s version")),
        };
        tracing::debug!(k3s_version = %version.git_version, "k3s version");
        if let Some(too_old) = version.too_old() {
            return Ok(self.not_started(RolloutResult::K3sTooOld(too_old), Some(version)));
        }
        self.copy_airgap_charts().await?;
        // Prune first: a tier switch on a small node must free memory (and
        // host ports such as node-exporter's) before the new stack starts.
        let result = match self.prune_removed(api, &mut reports).await? {
            Some(failed) => failed,
            None => self.roll_stages(api, &mut reports).await?,
        };
        Ok(RolloutReport {
            result,
            k3s_version: Some(version),
            stages: reports,
        })
    }

    /// Prunes the recorded stages that no longer apply, last first; the
    /// result when one fails.
    async fn prune_removed(
        &self,
        api: &K3sApi,
        reports: &mut Vec<StageReport>,
    ) -> Result<Option<RolloutResult>> {
        let wanted: Vec<&str> = self.stages.iter().map(|s| s.stage.name.as_str()).collect();
        let state = State::load(self.root, self.cfg)?;
        let mut removed: Vec<(String, StageRecord)> = state
            .stages
            .iter()
            .filter(|(n, _)| !wanted.contains(&n.as_str()))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        removed.sort_by(|a, b| b.1.file.cmp(&a.1.file));
        for (name, rec) in removed {
            let r = self.prune(api, &name, &rec).await?;
            let failed = r.state == StageState::Failed;
            let reason = r.detail.clone().unwrap_or_default();
            reports.push(r);
            if failed {
                return Ok(Some(RolloutResult::Failed {
                    stage: name,
                    reason,
                }));
            }
        }
        Ok(None)
    }

    /// Writes and gates the stages in order, stopping at the first failure.
    async fn roll_stages(
        &self,
        api: &K3sApi,
        reports: &mut Vec<StageReport>,
    ) -> Result<RolloutResult> {
        // One read of each stage file per pass: writing stage N never
        // changes whether stage N+1 is already in place.
        let current: Vec<bool> = self.stages.iter().map(|s| self.is_current(s)).collect();
        for (i, stage) in self.stages.iter().enumerate() {
            // Wait for health when this stage changes now, or when the next
            // one still has to be written; otherwise one look is enough.
            let wait = !current[i] || current.get(i + 1).is_none_or(|c| !c);
            let r = match self.skipped_by_k3s.get(&stage.stage.name) {
                Some(why) => StageReport {
                    name: stage.stage.name.clone(),
                    state: StageState::Failed,
                    detail: Some(why.clone()),
                    elapsed_s: 0.0,
                },
                None => self.stage(api, stage, current[i], wait).await?,
            };
            if r.state != StageState::Failed {
                reports.push(r);
                continue;
            }
            let reason = r.detail.clone().unwrap_or_default();
            reports.push(r);
            for (later, &in_place) in self.stages[i + 1..].iter().zip(&current[i + 1..]) {
                reports.push(StageReport {
                    name: later.stage.name.clone(),
                    state: if in_place {
                        StageState::Waiting
                    } else {
                        StageState::Pending
                    },
                    detail: Some(format!("blocked by {}", stage.stage.name)),
                    elapsed_s: 0.0,
                });
            }
            return Ok(RolloutResult::Failed {
                stage: stage.stage.name.clone(),
                reason,
            });
        }
        Ok(RolloutResult::Done)
    }

    /// A report for a rollout that wrote nothing: every stage pending.
    fn not_started(&self, result: RolloutResult, k3s_version: Option<K3sVersion>) -> RolloutReport {
        RolloutReport::not_started(&self.stages, result, k3s_version)
    }

    async fn wait_api(&self) -> Result<&K3sApi, String> {
        let api = self.api.as_ref().map_err(Clone::clone)?;
        let deadline = Instant::now()
            + if self.wait_for_api {
                self.timing.api_wait
            } else {
                Duration::ZERO
            };
        loop {
            match api.readyz().await {
                Ok(()) => return Ok(api),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(self.timing.poll.max(Duration::from_millis(500))).await
                }
            }
        }
    }

    /// True when the stage file on disk is exactly the rendered one.
    fn is_current(&self, s: &RenderedStage) -> bool {
        self.root
            .read(self.stage_host_path(&s.file_name))
            .ok()
            .flatten()
            .as_deref()
            == Some(s.content.as_slice())
    }

    /// Removes what a run killed inside an atomic write left in the
    /// directories the rollout writes: k3s ignores the dotfiles, but they
    /// would pile up. A live writer's temp files are kept
    /// ([`crate::atomic::remove_temp_files`]), so no lock is needed.
    fn clean_temp_files(&self) {
        for dir in [
            &self.cfg.paths.manifests_dir,
            &self.cfg.paths.static_charts_dir,
        ] {
            match crate::atomic::remove_temp_files(&self.root.path(dir), false) {
                Ok(removed) => {
                    for p in removed {
                        tracing::info!(path = %p.display(), "removed a temp file an interrupted run left");
                    }
                }
                Err(e) => tracing::warn!(dir = %dir, error = %e, "cannot clean temp files"),
            }
        }
    }

    async fn copy_airgap_charts(&self) -> Result<()> {
        for src in &self.airgap_charts {
            let name = src.rsplit('/').next().unwrap_or(src);
            let dest = format!("{}/{name}", self.cfg.paths.static_charts_dir);
            let data = self
                .root
                .read(src)?
                .with_context(|| format!("{src} disappeared"))?;
            if self.root.read(&dest)?.as_deref() != Some(data.as_slice()) {
                let _l = self.lock().await?;
                write_atomic(&self.root.path(&dest), &data, 0o644)
                    .with_context(|| format!("copying {src} to {dest}"))?;
                tracing::info!(path = %dest, from = %src, "copied air-gapped chart");
            }
        }
        Ok(())
    }
}

/// The YAML documents of a stage file that are objects.
fn docs(content: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(content);
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// Kinds that live outside namespaces.
const CLUSTER_SCOPED: [&str; 9] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "TracingPolicy",
    "APIService",
    "RuntimeClass",
];

/// REST paths of every object in a stage file, for pruning.
pub fn object_paths(content: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for d in docs(content) {
        let (Some(av), Some(kind), Some(name)) = (
            d["apiVersion"].as_str(),
            d["kind"].as_str(),
            d["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let ns = if CLUSTER_SCOPED.contains(&kind) {
            None
        } else {
            Some(d["metadata"]["namespace"].as_str().unwrap_or("default"))
        };
        out.push(kube::object_path(av, kind, ns, name));
    }
    out
}
