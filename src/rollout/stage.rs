//! One stage: write its file (when it changed), wait for its gates, record
//! the outcome.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::gates::{self, Gate};
use super::{Rollout, StageReport, StageState, helmchart, kube};
use crate::atomic::write_atomic;
use crate::bundle::RenderedStage;
use crate::clock::now_rfc3339;
use crate::digest::sha256_hex;
use crate::k3s::{ApiError, K3sApi};
use crate::state::{StageRecord, State};

/// What the gates of one stage in one pass compare against.
struct StagePass<'s> {
    s: &'s RenderedStage,
    /// SHA-256 of the stage file.
    sha: String,
    /// When sightline wrote the file in this pass ("" when it was in place):
    /// older failure events are about an earlier file.
    written_at: String,
    /// The install Job that belongs to the HelmChart spec sightline replaced.
    job_uid_before: Option<String>,
    /// Poll until the gates decide or time out; else look once.
    wait: bool,
    start: Instant,
}

impl Rollout<'_> {
    /// Writes the stage when it is not `current`, then checks its gates.
    pub(super) async fn stage(
        &self,
        api: &K3sApi,
        s: &RenderedStage,
        current: bool,
        wait: bool,
    ) -> Result<StageReport> {
        let start = Instant::now();
        let sha = sha256_hex(&s.content);
        let (written_at, job_uid_before) = if current {
            self.adopt_record(s, &sha).await?;
            (String::new(), None)
        } else {
            let before = self.job_to_replace(api, s).await?;
            (self.write_stage(s, &sha, start).await?, before)
        };
        let pass = StagePass {
            s,
            sha,
            written_at,
            job_uid_before,
            wait,
            start,
        };
        let g = self.stage_gates(api, &pass).await?;
        self.finish_stage(&s.stage.name, g, start).await
    }

    /// The uid of the install Job that the new HelmChart spec will make
    /// helm-controller replace, so its "Complete" or "Failed" is not taken
    /// for the new spec's. None when the spec in the cluster is the same
    /// (helm-controller then keeps the Job; see [`helmchart`]).
    async fn job_to_replace(&self, api: &K3sApi, s: &RenderedStage) -> Result<Option<String>> {
        let (Some(chart), Some(desired)) = (&s.helmchart, helmchart::desired_spec(&s.content))
        else {
            return Ok(None);
        };
        let Some(live) = kube::helmchart(api, chart).await? else {
            return Ok(None);
        };
        if !helmchart::spec_changed(&live["spec"], &desired) {
            return Ok(None);
        }
        Ok(kube::install_job(api, Some(&live), chart)
            .await?
            .and_then(|j| j["metadata"]["uid"].as_str().map(String::from)))
    }

    /// Writes the stage file and records it as waiting; returns when.
    async fn write_stage(&self, s: &RenderedStage, sha: &str, start: Instant) -> Result<String> {
        let name = &s.stage.name;
        let host_path = self.stage_host_path(&s.file_name);
        self.progress.update(
            name,
            StageState::Applying,
            &s.file_name,
            start.elapsed(),
            false,
        );
        let written_at = now_rfc3339();
        let _l = self.lock().await?;
        let mode = if s.sensitive { 0o600 } else { 0o644 };
        crate::failpoint::hit("rollout.write.before");
        write_atomic(&self.root.path(&host_path), &s.content, mode)
            .with_context(|| format!("writing {host_path}"))?;
        crate::failpoint::hit("rollout.write.after");
        let mut state = State::load(self.root, self.cfg)?;
        state.stages.insert(name.clone(), record(s, sha));
        state.save(self.root, self.cfg)?;
        if s.sensitive {
            tracing::info!(stage = %name, path = %host_path, sha256 = %sha, "wrote stage file (holds Secrets; content not logged)");
        } else {
            tracing::info!(stage = %name, path = %host_path, sha256 = %sha, "wrote stage file");
        }
        Ok(written_at)
    }

    /// Records a stage whose file is already in place but not recorded as
    /// this content: a run killed between writing the file and recording it
    /// left it so, and without the record the stage could never be pruned.
    /// Writes nothing when the record is there.
    async fn adopt_record(&self, s: &RenderedStage, sha: &str) -> Result<()> {
        let recorded = |state: &State| {
            state
                .stages
                .get(&s.stage.name)
                .is_some_and(|r| r.file == s.file_name && r.sha256 == sha)
        };
        if recorded(&State::load(self.root, self.cfg)?) {
            return Ok(());
        }
        let _l = self.lock().await?;
        let mut state = State::load(self.root, self.cfg)?;
        if !recorded(&state) {
            tracing::info!(stage = %s.stage.name, file = %s.file_name, "recording a stage file that is in place but was not recorded");
            state.stages.insert(s.stage.name.clone(), record(s, sha));
            state.save(self.root, self.cfg)?;
        }
        Ok(())
    }

    /// The three gates in order; the first that does not hold decides.
    async fn stage_gates(&self, api: &K3sApi, p: &StagePass<'_>) -> Result<Gate> {
        let (s, name) = (p.s, p.s.stage.name.as_str());
        let g = self
            .gate_loop(name, p, self.timing.addon, || {
                self.addon_gate(api, s, &p.sha, &p.written_at)
            })
            .await?;
        if !g.is_ok() {
            return Ok(g);
        }
        if let Some(chart) = &s.helmchart {
            let g = self
                .gate_loop(name, p, self.timing.job, || {
                    self.job_gate(api, chart, p.job_uid_before.as_deref())
                })
                .await?;
            if !g.is_ok() {
                return Ok(g);
            }
        }
        self.gate_loop(name, p, self.timing.workloads, || {
            self.workloads_gate(api, s)
        })
        .await
    }

    /// Records and reports how the stage ended in this pass.
    async fn finish_stage(&self, name: &str, g: Gate, start: Instant) -> Result<StageReport> {
        let (state, detail) = match g {
            Gate::Ok => (StageState::Healthy, None),
            Gate::Failed(why) => (StageState::Failed, Some(why)),
            Gate::Pending(why) => (StageState::Waiting, Some(why)),
            Gate::Retrying(why) => (StageState::Waiting, Some(format!("retrying: {why}"))),
        };
        self.record_state(name, state).await?;
        self.progress.update(
            name,
            state,
            detail.as_deref().unwrap_or(""),
            start.elapsed(),
            true,
        );
        Ok(StageReport {
            name: name.to_string(),
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

    /// Polls a gate until it is decided or `timeout` passes; without
    /// `wait` it is checked once. At the timeout a gate still pending, or
    /// still failing while upstream retries, fails with its last reason.
    async fn gate_loop<F, Fut>(
        &self,
        stage: &str,
        p: &StagePass<'_>,
        timeout: Duration,
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
            let shown = match &g {
                Gate::Pending(why) => why.clone(),
                Gate::Retrying(why) => format!("retrying: {why}"),
                Gate::Ok | Gate::Failed(_) => return Ok(g),
            };
            if !p.wait {
                return Ok(g);
            }
            if Instant::now() >= deadline {
                return Ok(Gate::Failed(match g {
                    Gate::Retrying(why) => format!(
                        "k3s still failed to apply the file after retrying for {} s; last event: {why}",
                        timeout.as_secs()
                    ),
                    _ => format!("timed out: {shown}"),
                }));
            }
            if shown != last {
                self.progress
                    .update(stage, StageState::Waiting, &shown, p.start.elapsed(), false);
                last = shown;
            }
            tokio::time::sleep(self.timing.poll).await;
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
                Gate::Pending(why) | Gate::Retrying(why) => {
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
}

/// The record of a stage file just written (or found in place): waiting
/// until its gates say otherwise.
fn record(s: &RenderedStage, sha: &str) -> StageRecord {
    StageRecord {
        file: s.file_name.clone(),
        sha256: sha.to_string(),
        state: StageState::Waiting,
        objects: super::object_paths(&s.content),
    }
}
