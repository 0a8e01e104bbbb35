//! Which audit files the running k3s loaded.
//!
//! k3s reads its config file and the drop-ins in `config.yaml.d` only when
//! it starts (k3s pkg/configfilearg/parser.go, called from the CLI before
//! the server runs), and the apiserver reads the audit policy file at start
//! too. So `K3sState.loaded_digest` holds only for the k3s start it was
//! recorded for (its InvocationID). When k3s has started since, by anyone,
//! it loaded whatever was on disk at that moment.

use anyhow::Result;
use tracing::info;

use super::ops::Ops;
use crate::digest::{digest_of, sha256_hex};
use crate::host::{Component, DesiredState};
use crate::state::State;
use crate::sysroot::Sysroot;

/// The digest of the audit files as they are on disk, over the desired and
/// the managed audit paths; computed as the plan computes its
/// `audit_digest`, so the two are equal exactly when disk holds the
/// desired files and nothing else of the audit component.
pub fn on_disk_digest(root: &Sysroot, desired: &DesiredState, state: &State) -> Option<String> {
    let mut paths: Vec<&str> = desired
        .files
        .iter()
        .filter(|f| f.component == Component::Audit)
        .map(|f| f.path.as_str())
        .chain(
            state
                .files
                .iter()
                .filter(|(_, f)| f.component == Component::Audit)
                .map(|(p, _)| p.as_str()),
        )
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let pairs: Vec<(String, String)> = paths
        .into_iter()
        .filter_map(|p| {
            std::fs::read(root.path(p))
                .ok()
                .map(|d| (p.to_string(), sha256_hex(&d)))
        })
        .collect();
    digest_of(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())))
}

/// When k3s runs a start other than the one `loaded_digest` belongs to,
/// records what that start loaded: the files on disk now (the plan repairs
/// any that differ, and the differing digest makes it restart k3s).
/// Returns a note when the record changed.
pub async fn note_start<O: Ops>(
    ops: &O,
    root: &Sysroot,
    unit: &str,
    desired: &DesiredState,
    state: &mut State,
) -> Result<Option<String>> {
    let status = ops.unit_status(unit).await?;
    if !status.active_state.is_running() || status.invocation_id.is_empty() {
        return Ok(None);
    }
    let Some(known) = state.k3s.loaded_invocation.clone() else {
        // A state from a release that did not record the start: nothing to
        // compare with, so take the current start as the known one.
        state.k3s.loaded_invocation = Some(status.invocation_id);
        return Ok(None);
    };
    if known == status.invocation_id {
        return Ok(None);
    }
    let loaded = on_disk_digest(root, desired, state);
    info!(unit, invocation = %status.invocation_id, digest = ?loaded, "k3s started since sightline last restarted it; it loaded the audit files on disk then");
    state.k3s.loaded_invocation = Some(status.invocation_id);
    let changed = state.k3s.loaded_digest != loaded;
    state.k3s.loaded_digest = loaded;
    Ok(changed.then(|| {
        format!(
            "{unit} was restarted by someone else and loaded the audit files on disk at that moment"
        )
    }))
}

/// Records the k3s start that has just loaded the audit files.
pub async fn record_start<O: Ops>(ops: &O, unit: &str, state: &mut State) {
    if let Ok(s) = ops.unit_status(unit).await
        && !s.invocation_id.is_empty()
    {
        state.k3s.loaded_invocation = Some(s.invocation_id);
    }
}
