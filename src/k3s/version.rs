//! The running k3s version (`GET /version`) and what sightline needs from it.
//!
//! The rollout rests on two deploy-controller behaviours that older k3s
//! lacks, and the stateful charts on one helm-controller field. Where each
//! version comes from is recorded in docs/research/k3s.md ("Versions").

use serde::{Deserialize, Serialize};

/// A k3s version as its apiserver reports it in `gitVersion`, e.g. `v1.30.4+k3s1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K3sVersion {
    /// The `gitVersion` string as reported.
    pub git_version: String,
    /// Kubernetes major version.
    pub major: u32,
    /// Kubernetes minor version.
    pub minor: u32,
    /// Kubernetes patch version.
    pub patch: u32,
}

/// Why the cluster stages cannot run on this k3s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TooOld {
    /// The running version (`gitVersion`).
    pub running: String,
    /// The lowest release sightline accepts on this release line (or the lowest overall).
    pub minimum: String,
    /// What the running version lacks, and what would happen.
    pub why: String,
}

impl std::fmt::Display for TooOld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "k3s {} is older than {}, the minimum for the cluster stages: {}. Upgrade k3s, then run `sightline apply` again",
            self.running, self.minimum, self.why
        )
    }
}

/// One release line's first release with a feature: (minor, patch). A minor
/// above the last entry has it from .0 unless its own entry says otherwise.
type Firsts = [(u32, u32)];

/// k3s stores the Addon's `spec.checksum` only after a successful apply from
/// these releases on (k3s PR #3920, backport #3921 to release-1.21): before,
/// the checksum is never stored and the Addon gate waits forever.
const ADDON_CHECKSUM: &Firsts = &[(21, 5), (22, 2)];

/// k3s deletes the objects of a file that was emptied from these releases on
/// (k3s PR #5560; backports #5598 in v1.22.10, #5599 in v1.23.7): before,
/// pruning a stage waits forever. v1.24.0+k3s1 is not confirmed to carry
/// #5560, so the 1.24 line starts at .1.
const EMPTIED_FILE_PRUNE: &Firsts = &[(22, 10), (23, 7), (24, 1)];

/// helm-controller with `spec.failurePolicy` (v0.12.0) ships in these k3s
/// releases (CHANGELOG: #5280 in v1.22.8, #5263 in v1.23.5).
const FAILURE_POLICY: &Firsts = &[(22, 8), (23, 5)];

fn has(v: &K3sVersion, firsts: &Firsts) -> bool {
    if v.major != 1 {
        return v.major > 1;
    }
    let Some(&(first_minor, _)) = firsts.first() else {
        return true;
    };
    if v.minor < first_minor {
        return false;
    }
    match firsts.iter().find(|(m, _)| *m == v.minor) {
        Some(&(_, patch)) => v.patch >= patch,
        None => true,
    }
}

/// The first release with a feature on `v`'s line, or the first one overall.
fn first_for(v: &K3sVersion, firsts: &Firsts) -> String {
    let (m, p) = firsts
        .iter()
        .find(|(m, _)| *m == v.minor)
        .or_else(|| firsts.first())
        .copied()
        .unwrap_or((0, 0));
    format!("v1.{m}.{p}")
}

impl K3sVersion {
    /// Parses `v1.30.4+k3s1`, `v1.31.0-rc1+k3s1` and the like.
    pub fn parse(git_version: &str) -> Option<K3sVersion> {
        let core = git_version.trim().strip_prefix('v')?;
        let core = core.split(['+', '-']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
        Some(K3sVersion {
            git_version: git_version.trim().to_string(),
            major,
            minor,
            patch,
        })
    }

    /// Why the cluster stages must not start on this version, if they must not.
    pub fn too_old(&self) -> Option<TooOld> {
        let mut why = Vec::new();
        if !has(self, ADDON_CHECKSUM) {
            why.push(
                "it never stores the Addon's spec.checksum (added in v1.21.5 and v1.22.2), so sightline cannot see that k3s applied a stage file",
            );
        }
        if !has(self, EMPTIED_FILE_PRUNE) {
            why.push(
                "it does not delete the objects of an emptied manifest (added in v1.22.10, v1.23.7 and v1.24), so removing a stage after a tier change would wait forever",
            );
        }
        if why.is_empty() {
            return None;
        }
        Some(TooOld {
            running: self.git_version.clone(),
            minimum: first_for(self, EMPTIED_FILE_PRUNE),
            why: why.join("; and "),
        })
    }

    /// Whether this k3s's helm-controller knows `spec.failurePolicy`; when
    /// not, why it matters (for `detect`).
    pub fn failure_policy_note(&self) -> Option<String> {
        (!has(self, FAILURE_POLICY)).then(|| {
            format!(
                "k3s {} bundles a helm-controller without HelmChart spec.failurePolicy (from {}): a failed upgrade of Loki or the metrics stack is uninstalled and reinstalled, losing its data",
                self.git_version,
                first_for(self, FAILURE_POLICY)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> K3sVersion {
        K3sVersion::parse(s).unwrap()
    }

    #[test]
    fn parses_k3s_versions() {
        let x = v("v1.30.4+k3s1");
        assert_eq!((x.major, x.minor, x.patch), (1, 30, 4));
        assert_eq!(v("v1.31.0-rc1+k3s1").minor, 31);
        assert!(K3sVersion::parse("1.30.4").is_none());
        assert!(K3sVersion::parse("v1.30").is_none());
    }

    #[test]
    fn minimum_for_the_cluster_stages() {
        for ok in [
            "v1.22.10+k3s1",
            "v1.23.7+k3s1",
            "v1.24.1+k3s1",
            "v1.25.0+k3s1",
            "v1.33.4+k3s1",
        ] {
            assert_eq!(v(ok).too_old(), None, "{ok}");
        }
        let t = v("v1.23.6+k3s1").too_old().unwrap();
        assert_eq!(t.minimum, "v1.23.7");
        assert!(
            t.why.contains("emptied") && !t.why.contains("checksum"),
            "{t:?}"
        );
        let t = v("v1.21.4+k3s1").too_old().unwrap();
        assert_eq!(t.minimum, "v1.22.10");
        assert!(
            t.why.contains("checksum") && t.why.contains("emptied"),
            "{t:?}"
        );
        assert!(v("v1.22.9+k3s1").too_old().is_some());
        assert!(v("v1.24.0+k3s1").too_old().is_some());
        let msg = v("v1.21.4+k3s1").too_old().unwrap().to_string();
        assert!(
            msg.contains("v1.21.4+k3s1") && msg.contains("v1.22.10"),
            "{msg}"
        );
    }

    #[test]
    fn failure_policy_support() {
        assert!(v("v1.22.7+k3s1").failure_policy_note().is_some());
        assert!(v("v1.22.8+k3s1").failure_policy_note().is_none());
        assert!(v("v1.23.4+k3s1").failure_policy_note().is_some());
        assert!(v("v1.23.5+k3s1").failure_policy_note().is_none());
        assert!(v("v1.24.0+k3s1").failure_policy_note().is_none());
        assert!(v("v1.21.14+k3s1").failure_policy_note().is_some());
    }
}
