//! Removing a stage that no longer applies: its file is emptied so k3s
//! deletes its objects (k3s v1.22.10, v1.23.7, v1.24.1 and later; see
//! `crate::k3s::version`), waited for, then deleted.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;

use super::{Rollout, StageReport, StageState, kube};
use crate::atomic::{remove_file, write_atomic};
use crate::digest::sha256_hex;
use crate::k3s::K3sApi;
use crate::state::{StageRecord, State};

impl Rollout<'_> {
    /// Empties a stage's file so k3s deletes its objects, waits until they
    /// are gone (HelmCharts through their helm-delete job), then removes it.
    pub(super) async fn prune(
        &self,
        api: &K3sApi,
        name: &str,
        rec: &StageRecord,
    ) -> Result<StageReport> {
        let start = Instant::now();
        let host_path = self.stage_host_path(&rec.file);
        let empty = format!(
            "# Stage {name} was removed by sightline; k3s deletes its objects, then sightline deletes this file.\n"
        );
        let sha = sha256_hex(empty.as_bytes());
        if self.root.read(&host_path)?.as_deref() != Some(empty.as_bytes()) {
            let _l = self.lock().await?;
            crate::failpoint::hit("rollout.prune.empty.before");
            write_atomic(&self.root.path(&host_path), empty.as_bytes(), 0o644)?;
            crate::failpoint::hit("rollout.prune.empty.after");
            tracing::info!(stage = %name, path = %host_path, "emptied stage file to prune its objects");
        }
        self.progress
            .update(name, StageState::Pruning, &rec.file, start.elapsed(), false);
        let base = rec.file.split('.').next().unwrap_or(&rec.file).to_string();
        let gone_when_pruned = self.not_held_elsewhere(&rec.objects);
        let deadline = Instant::now() + self.timing.prune;
        let mut why;
        loop {
            why = String::new();
            let addon = kube::addon(api, &base).await.ok().flatten();
            if addon.as_ref().and_then(|a| a["spec"]["checksum"].as_str()) != Some(sha.as_str()) {
                why = "waiting for k3s to apply the emptied file".into();
            } else {
                for p in &gone_when_pruned {
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
            self.progress
                .update(name, StageState::Failed, &detail, start.elapsed(), true);
            return Ok(StageReport {
                name: name.into(),
                state: StageState::Failed,
                detail: Some(detail),
                elapsed_s: start.elapsed().as_secs_f64(),
            });
        }
        let _l = self.lock().await?;
        crate::failpoint::hit("rollout.prune.remove.before");
        remove_file(&self.root.path(&host_path))?;
        crate::failpoint::hit("rollout.prune.remove.after");
        let mut state = State::load(self.root, self.cfg)?;
        state.stages.remove(name);
        state.save(self.root, self.cfg)?;
        tracing::info!(stage = %name, path = %host_path, "pruned stage and removed its file");
        self.progress
            .update(name, StageState::Pruned, "", start.elapsed(), true);
        Ok(StageReport {
            name: name.into(),
            state: StageState::Pruned,
            detail: None,
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }

    /// The objects of a pruned stage that k3s deletes: not those a stage
    /// file already in place declares too. k3s's apply deletes only what
    /// the emptied Addon itself applied last (wrangler's desiredset owns
    /// each object by one Addon), so an object both tiers carry (a
    /// dashboard) stays with the stage written after it. That order
    /// happens when a prune is repeated after the new stages are in place:
    /// a run killed half-way, or stages taken over from the previous Lease
    /// holder's record.
    fn not_held_elsewhere(&self, objects: &[String]) -> Vec<String> {
        let held: BTreeSet<String> = self
            .stages
            .iter()
            .filter(|s| self.is_current(s))
            .flat_map(|s| super::object_paths(&s.content))
            .collect();
        objects
            .iter()
            .filter(|p| !held.contains(*p))
            .cloned()
            .collect()
    }
}
