//! What the cluster pass would do to each stage file, read from disk
//! without the API: the cluster half of `sightline plan`.

use anyhow::Result;
use serde::Serialize;

use super::{Ctx, DecisionSource};
use crate::config::LoadedConfig;
use crate::facts::Facts;
use crate::state::State;

/// What happens to one stage file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageAction {
    /// Written for the first time.
    Create,
    /// Rewritten with new content.
    Update,
    /// Already as rendered.
    Unchanged,
    /// No longer wanted: emptied, waited for, removed.
    Prune,
    /// The cluster layer does not apply here.
    Skipped,
}

impl StageAction {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            StageAction::Create => "create",
            StageAction::Update => "update",
            StageAction::Unchanged => "unchanged",
            StageAction::Prune => "prune",
            StageAction::Skipped => "skipped",
        }
    }

    /// True when the cluster would change.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            StageAction::Create | StageAction::Update | StageAction::Prune
        )
    }
}

/// One stage in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    /// Stage name; empty when the whole cluster layer is skipped.
    pub stage: String,
    /// File name in the manifests directory.
    pub file: String,
    /// What happens to it.
    pub action: StageAction,
    /// Why, when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The cluster plan: prunes first, then every wanted stage in order; and
/// whose decision it follows.
pub async fn cluster_plan(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    facts: &Facts,
    state: &State,
) -> Result<(Vec<StagePlan>, DecisionSource)> {
    let skipped = |reason| StagePlan {
        stage: String::new(),
        file: String::new(),
        action: StageAction::Skipped,
        reason: Some(reason),
    };
    if let Some(reason) = super::not_applicable(facts) {
        return Ok((vec![skipped(reason)], DecisionSource::Local));
    }
    let (stages, source) = match super::review_stages(&ctx.root, cfg, facts, None).await {
        Ok((stages, _, _, source)) => (stages, source),
        Err(e) => match e.downcast::<crate::bundle::render::StackRefused>() {
            Ok(refused) => return Ok((vec![skipped(refused.0)], DecisionSource::Local)),
            Err(e) => return Err(e),
        },
    };
    // A follower prunes nothing itself: it mirrors the holder's files.
    let prunes = !matches!(source, DecisionSource::Cluster { .. });
    let mut out: Vec<StagePlan> = state
        .stages
        .iter()
        .filter(|(name, _)| prunes && !stages.iter().any(|s| &s.stage.name == *name))
        .map(|(name, rec)| StagePlan {
            stage: name.clone(),
            file: rec.file.clone(),
            action: StageAction::Prune,
            reason: None,
        })
        .collect();
    for s in &stages {
        let path = format!("{}/{}", cfg.config.paths.manifests_dir, s.file_name);
        let action = match ctx.root.read(&path)? {
            None => StageAction::Create,
            Some(c) if c == s.content => StageAction::Unchanged,
            Some(_) => StageAction::Update,
        };
        out.push(StagePlan {
            stage: s.stage.name.clone(),
            file: s.file_name.clone(),
            action,
            reason: None,
        });
    }
    Ok((out, source))
}
