//! The staged rollout of the bundle through k3s.
//!
//! Each stage file goes into the manifests directory under a dotfile temp
//! name k3s ignores, then is renamed into place. The next stage is written
//! only once the previous one is healthy. Stages that no longer apply (tier
//! or component change) are emptied so k3s prunes their objects, waited
//! for, then removed.

pub mod gates;
pub mod kube;
pub mod progress;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::atomic::{remove_file, write_atomic};
use crate::bundle::RenderedStage;
use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::digest::sha256_hex;
use crate::k3s::{ApiError, K3sApi};
use crate::lock::Lock;
use crate::state::{StageRecord, State};
use crate::sysroot::Sysroot;
use gates::Gate;
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
}

/// The whole rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// How it ended.
    pub result: RolloutResult,
    /// Each stage, in order (pruned ones first).
    pub stages: Vec<StageReport>,
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
}

impl Rollout<'_> {
    /// The state lock, for the short writes of a stage file and its
    /// record. Waiting for it never blocks the thread: the daemon's converge
    /// runs on the same one and may hold the lock across a k3s restart.
    async fn lock(&self) -> Result<Lock> {
        Lock::acquire(
            &self.root.path(self.cfg.lock_path()),
            Duration::from_secs(600),
        )
        .await
    }

    fn stage_host_path(&self, file: &str) -> String {
        format!("{}/{file}", self.cfg.paths.manifests_dir)
    }

    /// Runs the rollout to the end, a failure, or an unreachable API.
    pub async fn run(&self) -> Result<RolloutReport> {
        let mut reports = Vec::new();
        let waiting = Instant::now();
        let api = match self.wait_api().await {
            Ok(api) => api,
            Err(reason) => {
                return Ok(RolloutReport {
                    result: RolloutResult::ApiUnreachable {
                        reason,
                        waited_ms: waiting.elapsed().as_millis() as u64,
                    },
                    stages: self
                        .stages
                        .iter()
                        .map(|s| StageReport {
                            name: s.stage.name.clone(),
                            state: StageState::Pending,
                            detail: None,
                            elapsed_s: 0.0,
                        })
                        .collect(),
                });
            }
        };
        self.copy_airgap_charts().await?;
        // Prune first: a tier switch on a small node must free memory (and
        // host ports such as node-exporter's) before the new stack starts.
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
                return Ok(RolloutReport {
                    result: RolloutResult::Failed {
                        stage: name,
                        reason,
                    },
                    stages: reports,
                });
            }
        }
        // One read of each stage file per pass: writing stage N never
        // changes whether stage N+1 is already in place.
        let current: Vec<bool> = self.stages.iter().map(|s| self.is_current(s)).collect();
        for (i, stage) in self.stages.iter().enumerate() {
            // Wait for health when this stage changes now, or when the next
            // one still has to be written; otherwise one look is enough.
            let wait = !current[i] || current.get(i + 1).is_none_or(|c| !c);
            let r = self.stage(api, stage, current[i], wait).await?;
            let failed = r.state == StageState::Failed;
            let reason = r.detail.clone().unwrap_or_default();
            reports.push(r);
            if failed {
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
                return Ok(RolloutReport {
                    result: RolloutResult::Failed {
                        stage: stage.stage.name.clone(),
                        reason,
                    },
                    stages: reports,
                });
            }
        }
        Ok(RolloutReport {
            result: RolloutResult::Done,
            stages: reports,
        })
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

    async fn stage(
        &self,
        api: &K3sApi,
        s: &RenderedStage,
        current: bool,
        wait: bool,
    ) -> Result<StageReport> {
        let start = Instant::now();
        let name = &s.stage.name;
        let host_path = self.stage_host_path(&s.file_name);
        let sha = sha256_hex(&s.content);
        let mut job_uid_before = None;
        let written_at;
        if current {
            written_at = String::new();
        } else {
            // A changed HelmChart gets a new install job; remember the old
            // one so its "Complete" does not count for the new spec.
            if let Some(chart) = &s.helmchart {
                let old = self.root.read(&host_path)?.unwrap_or_default();
                if helmchart_doc(&old) != helmchart_doc(&s.content) {
                    let hc = kube::helmchart(api, chart)
                        .await
                        .map_err(anyhow::Error::from)?;
                    job_uid_before = kube::install_job(api, hc.as_ref(), chart)
                        .await?
                        .and_then(|j| j["metadata"]["uid"].as_str().map(String::from));
                }
            }
            self.progress.update(
                name,
                StageState::Applying.name(),
                &s.file_name,
                start.elapsed(),
                false,
            );
            written_at = now_rfc3339();
            let _l = self.lock().await?;
            let mode = if s.sensitive { 0o600 } else { 0o644 };
            write_atomic(&self.root.path(&host_path), &s.content, mode)
                .with_context(|| format!("writing {host_path}"))?;
            let mut state = State::load(self.root, self.cfg)?;
            state.stages.insert(
                name.clone(),
                StageRecord {
                    file: s.file_name.clone(),
                    sha256: sha.clone(),
                    state: StageState::Waiting,
                    objects: object_paths(&s.content),
                },
            );
            state.save(self.root, self.cfg)?;
            if s.sensitive {
                tracing::info!(stage = %name, path = %host_path, sha256 = %sha, "wrote stage file (holds Secrets; content not logged)");
            } else {
                tracing::info!(stage = %name, path = %host_path, sha256 = %sha, "wrote stage file");
            }
        }
        let gates = async {
            let g = self
                .gate_loop(name, start, self.timing.addon, wait, || {
                    self.addon_gate(api, s, &sha, &written_at)
                })
                .await?;
            if !g.is_ok() {
                return Ok::<Gate, anyhow::Error>(g);
            }
            if let Some(chart) = &s.helmchart {
                let g = self
                    .gate_loop(name, start, self.timing.job, wait, || {
                        self.job_gate(api, chart, job_uid_before.as_deref())
                    })
                    .await?;
                if !g.is_ok() {
                    return Ok(g);
                }
            }
            self.gate_loop(name, start, self.timing.workloads, wait, || {
                self.workloads_gate(api, s)
            })
            .await
        };
        let g = gates.await?;
        let (state, detail) = match g {
            Gate::Ok => (StageState::Healthy, None),
            Gate::Failed(why) => (StageState::Failed, Some(why)),
            Gate::Pending(why) if wait => (StageState::Failed, Some(format!("timed out: {why}"))),
            Gate::Pending(why) => (StageState::Waiting, Some(why)),
        };
        self.record_state(name, state).await?;
        self.progress.update(
            name,
            state.name(),
            detail.as_deref().unwrap_or(""),
            start.elapsed(),
            true,
        );
        Ok(StageReport {
            name: name.clone(),
            state,
            detail,
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }

    async fn record_state(&self, name: &str, st: StageState) -> Result<()> {
        let _l = self.lock().await?;
        let mut state = State::load(self.root, self.cfg)?;
        if let Some(r) = state.stages.get_mut(name)
            && r.state != st
        {
            r.state = st;
            state.save(self.root, self.cfg)?;
        }
        Ok(())
    }

    /// Polls a gate until it is decided or `timeout` passes; with `wait`
    /// false it is checked once.
    async fn gate_loop<F, Fut>(
        &self,
        stage: &str,
        start: Instant,
        timeout: Duration,
        wait: bool,
        mut check: F,
    ) -> Result<Gate>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Gate, ApiError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let g = match check().await {
                Ok(g) => g,
                Err(e @ ApiError::Unreachable { .. }) => Gate::Pending(e.to_string()),
                Err(e) => return Err(e.into()),
            };
            match &g {
                Gate::Pending(why) if wait && Instant::now() < deadline => {
                    if *why != last {
                        self.progress.update(
                            stage,
                            StageState::Waiting.name(),
                            why,
                            start.elapsed(),
                            false,
                        );
                        last = why.clone();
                    }
                    tokio::time::sleep(self.timing.poll).await;
                }
                _ => return Ok(g),
            }
        }
    }

    async fn addon_gate(
        &self,
        api: &K3sApi,
        s: &RenderedStage,
        sha: &str,
        written_at: &str,
    ) -> Result<Gate, ApiError> {
        let base = s.stage.base_name();
        let addon = kube::addon(api, &base).await?;
        if addon.as_ref().and_then(|a| a["spec"]["checksum"].as_str()) == Some(sha) {
            return Ok(Gate::Ok);
        }
        let events = kube::addon_events(api, &base).await?;
        Ok(gates::addon(addon.as_ref(), &events, sha, written_at))
    }

    async fn job_gate(
        &self,
        api: &K3sApi,
        chart: &str,
        job_uid_before: Option<&str>,
    ) -> Result<Gate, ApiError> {
        let hc = kube::helmchart(api, chart).await?;
        let job = kube::install_job(api, hc.as_ref(), chart).await?;
        let pods = match &job {
            Some(j) => kube::pods_of(api, "kube-system", j).await?,
            None => Vec::new(),
        };
        Ok(gates::install_job(
            hc.as_ref(),
            job.as_ref(),
            &pods,
            job_uid_before,
        ))
    }

    async fn workloads_gate(&self, api: &K3sApi, s: &RenderedStage) -> Result<Gate, ApiError> {
        let mut pending = Vec::new();
        for w in &s.workloads {
            let obj = kube::workload(api, &w.kind, &w.namespace, &w.name).await?;
            match gates::workload(&w.kind, obj.as_ref()) {
                Gate::Ok => {}
                Gate::Failed(why) => {
                    return Ok(Gate::Failed(format!(
                        "{}/{}/{}: {why}",
                        w.kind, w.namespace, w.name
                    )));
                }
                Gate::Pending(why) => {
                    let pods = match &obj {
                        Some(o) => kube::pods_of(api, &w.namespace, o).await?,
                        None => Vec::new(),
                    };
                    let problems = gates::pod_problems(&pods);
                    pending.push(format!(
                        "{}/{}/{}: {why}{}",
                        w.kind,
                        w.namespace,
                        w.name,
                        if problems.is_empty() {
                            String::new()
                        } else {
                            format!(" — {}", problems.join("; "))
                        }
                    ));
                }
            }
        }
        Ok(if pending.is_empty() {
            Gate::Ok
        } else {
            Gate::Pending(pending.join("; "))
        })
    }

    /// Empties a stage's file so k3s deletes its objects, waits until they
    /// are gone (HelmCharts through their helm-delete job), then removes it.
    async fn prune(&self, api: &K3sApi, name: &str, rec: &StageRecord) -> Result<StageReport> {
        let start = Instant::now();
        let host_path = self.stage_host_path(&rec.file);
        let empty = format!(
            "# Stage {name} was removed by sightline; k3s deletes its objects, then sightline deletes this file.\n"
        );
        let sha = sha256_hex(empty.as_bytes());
        if self.root.read(&host_path)?.as_deref() != Some(empty.as_bytes()) {
            let _l = self.lock().await?;
            write_atomic(&self.root.path(&host_path), empty.as_bytes(), 0o644)?;
            tracing::info!(stage = %name, path = %host_path, "emptied stage file to prune its objects");
        }
        self.progress
            .update(name, "pruning", &rec.file, start.elapsed(), false);
        let base = rec.file.split('.').next().unwrap_or(&rec.file).to_string();
        let deadline = Instant::now() + self.timing.prune;
        let mut why;
        loop {
            why = String::new();
            let addon = kube::addon(api, &base).await.ok().flatten();
            if addon.as_ref().and_then(|a| a["spec"]["checksum"].as_str()) != Some(sha.as_str()) {
                why = "waiting for k3s to apply the emptied file".into();
            } else {
                for p in &rec.objects {
                    match kube::get_opt(api, p).await {
                        Ok(None) => {}
                        Ok(Some(_)) => {
                            why = format!("{p} still exists");
                            break;
                        }
                        Err(e) => {
                            why = e.to_string();
                            break;
                        }
                    }
                }
            }
            if why.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.timing.poll).await;
        }
        if !why.is_empty() {
            let detail = format!("prune timed out: {why}");
            self.progress.update(
                name,
                StageState::Failed.name(),
                &detail,
                start.elapsed(),
                true,
            );
            return Ok(StageReport {
                name: name.into(),
                state: StageState::Failed,
                detail: Some(detail),
                elapsed_s: start.elapsed().as_secs_f64(),
            });
        }
        let _l = self.lock().await?;
        remove_file(&self.root.path(&host_path))?;
        let mut state = State::load(self.root, self.cfg)?;
        state.stages.remove(name);
        state.save(self.root, self.cfg)?;
        tracing::info!(stage = %name, path = %host_path, "pruned stage and removed its file");
        self.progress
            .update(name, StageState::Pruned.name(), "", start.elapsed(), true);
        Ok(StageReport {
            name: name.into(),
            state: StageState::Pruned,
            detail: None,
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }
}

/// The HelmChart document of a stage file, if any.
fn helmchart_doc(content: &[u8]) -> Option<Value> {
    docs(content)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("HelmChart"))
}

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
