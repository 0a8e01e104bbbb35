//! Manifests k3s's deploy controller will not apply: names it is told to
//! disable and `.skip` markers (k3s `pkg/deploy/controller.go`
//! `listFilesIn`, `shouldDisableFile`, `shouldSkipFile`; the disable list is
//! built in `pkg/cli/server/server.go`).

use serde::Serialize;

use crate::sysroot::Sysroot;

/// The prefix of every stage file sightline writes.
pub const STAGE_PREFIX: &str = "sightline-";

/// One name k3s is told to disable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disable {
    /// The name, as k3s compares it.
    pub name: String,
    /// Where it is set: the k3s command line or a config file.
    pub set_in: String,
}

/// Why k3s will not apply a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// `--disable NAME`: k3s deletes the file and every object it made.
    Disabled {
        /// The matching name.
        name: String,
        /// Where it is set.
        set_in: String,
    },
    /// A `FILE.skip` anywhere under the manifests directory: k3s ignores
    /// every file of that name.
    SkipMarker {
        /// Host path of the marker.
        marker: String,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Disabled { name, set_in } => write!(
                f,
                "k3s is started with --disable {name} ({set_in}): it deletes this file and its objects instead of applying it; remove {name} from the disable list"
            ),
            SkipReason::SkipMarker { marker } => write!(
                f,
                "{marker} exists: k3s ignores every manifest of that name; delete {marker}"
            ),
        }
    }
}

/// A sightline stage file k3s is told to skip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedStage {
    /// File name of the stage, e.g. `sightline-20-loki.yaml`.
    pub file: String,
    /// Why.
    pub reason: SkipReason,
}

impl std::fmt::Display for SkippedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "k3s is told to skip this file: {}: {}",
            self.file, self.reason
        )
    }
}

/// What k3s's deploy controller is told to leave out under one manifests
/// directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestRules {
    /// Host path of the directory k3s watches (`<data-dir>/server/manifests`).
    pub base: String,
    /// The disable list: each `--disable` value and `disable:` item, split
    /// on commas and trimmed as `server.go` does.
    pub disables: Vec<Disable>,
    /// Host paths of every `*.skip` file under the base.
    pub skip_markers: Vec<String>,
}

impl ManifestRules {
    /// Reads the `.skip` markers under `base` (recursively, following
    /// top-level directory links as `walkFiles` does, inside the root).
    pub fn detect(root: &Sysroot, base: &str, disables: Vec<Disable>) -> ManifestRules {
        let mut skip_markers = Vec::new();
        for path in walk(root, base) {
            if name_of(&path).ends_with(".skip") {
                skip_markers.push(path);
            }
        }
        skip_markers.sort();
        ManifestRules {
            base: base.to_string(),
            disables,
            skip_markers,
        }
    }

    /// Why k3s would not apply the manifest at `path` (a host path), in
    /// k3s's order: disable first, then `.skip`; `None` when it applies it.
    pub fn skip_reason(&self, path: &str) -> Option<SkipReason> {
        let rel = path.strip_prefix(self.base.as_str())?;
        let parts: Vec<&str> = rel.split('/').collect();
        // Every parent directory below the base is checked: "parent1",
        // "parent1/parent2", … (`shouldDisableFile`).
        for i in 1..parts.len() {
            let sub = parts[..i]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            if let Some(d) = self.disables.iter().find(|d| d.name == sub) {
                return Some(disabled(d));
            }
        }
        let name = name_of(path);
        let manifest = is_manifest_name(name);
        if manifest {
            // `filepath.Ext` strips only the last extension.
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            if let Some(d) = self.disables.iter().find(|d| d.name == stem) {
                return Some(disabled(d));
            }
        }
        let marker_name = format!("{name}.skip");
        self.skip_markers
            .iter()
            .find(|m| name_of(m) == marker_name)
            .map(|m| SkipReason::SkipMarker { marker: m.clone() })
    }

    /// Sightline's stage files k3s will not apply: existing ones under the
    /// base and markers naming a stage file that is not written yet.
    pub fn skipped_stages(&self, root: &Sysroot) -> Vec<SkippedStage> {
        let mut out: Vec<SkippedStage> = walk(root, &self.base)
            .into_iter()
            .filter(|p| name_of(p).starts_with(STAGE_PREFIX) && is_manifest_name(name_of(p)))
            .filter_map(|p| {
                self.skip_reason(&p).map(|reason| SkippedStage {
                    file: name_of(&p).to_string(),
                    reason,
                })
            })
            .collect();
        for m in &self.skip_markers {
            let target = name_of(m).trim_end_matches(".skip");
            if target.starts_with(STAGE_PREFIX) && !out.iter().any(|s| s.file == target) {
                out.push(SkippedStage {
                    file: target.to_string(),
                    reason: SkipReason::SkipMarker { marker: m.clone() },
                });
            }
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }
}

fn disabled(d: &Disable) -> SkipReason {
    SkipReason::Disabled {
        name: d.name.clone(),
        set_in: d.set_in.clone(),
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `util.HasSuffixI(name, ".yaml", ".yml", ".json")`.
fn is_manifest_name(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with(".yaml") || l.ends_with(".yml") || l.ends_with(".json")
}

/// Splits one disable value the way `server.go` does.
pub fn split_disable(value: &str, set_in: &str) -> Vec<Disable> {
    value
        .split(',')
        .map(str::trim)
        .map(|name| Disable {
            name: name.to_string(),
            set_in: set_in.to_string(),
        })
        .collect()
}

/// Host paths of every entry under `base` (files and directories), the
/// base's own top-level directory links followed inside the root.
fn walk(root: &Sysroot, base: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(base.to_string(), true)];
    while let Some((dir, top)) = stack.pop() {
        let Some(real) = super::units::resolve(root, &dir) else {
            continue;
        };
        let Ok(rd) = std::fs::read_dir(root.path(&real)) else {
            continue;
        };
        for e in rd.flatten() {
            let host = format!("{dir}/{}", e.file_name().to_string_lossy());
            let Ok(ft) = e.file_type() else { continue };
            let is_dir = ft.is_dir()
                || (ft.is_symlink()
                    && top
                    && super::units::resolve(root, &host).is_some_and(|t| root.path(&t).is_dir()));
            if is_dir {
                stack.push((host.clone(), false));
            }
            out.push(host);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/var/lib/rancher/k3s/server/manifests";

    fn rules(disables: &[&str], markers: &[&str]) -> ManifestRules {
        ManifestRules {
            base: BASE.into(),
            disables: disables
                .iter()
                .flat_map(|d| split_disable(d, "the k3s command line"))
                .collect(),
            skip_markers: markers.iter().map(|m| format!("{BASE}/{m}")).collect(),
        }
    }

    #[test]
    fn disable_matches_directories_and_stems_like_k3s() {
        let stage = format!("{BASE}/sightline/sightline-20-loki.yaml");
        let r = rules(&["traefik, sightline"], &[]);
        assert!(matches!(
            r.skip_reason(&stage),
            Some(SkipReason::Disabled { ref name, .. }) if name == "sightline"
        ));
        let r = rules(&["sightline-20-loki"], &[]);
        assert!(r.skip_reason(&stage).is_some());
        // Only the last extension goes; the name must match exactly.
        let r = rules(&["sightline-20", "Sightline"], &[]);
        assert_eq!(r.skip_reason(&stage), None);
        assert_eq!(rules(&[], &[]).skip_reason(&stage), None);
        // Outside the base nothing applies.
        assert_eq!(
            rules(&["sightline"], &[]).skip_reason("/elsewhere/sightline/a.yaml"),
            None
        );
    }

    #[test]
    fn a_skip_marker_anywhere_blocks_that_name() {
        let stage = format!("{BASE}/sightline/sightline-20-loki.yaml");
        let r = rules(&[], &["other/sightline-20-loki.yaml.skip"]);
        let why = r.skip_reason(&stage).unwrap();
        assert!(
            why.to_string()
                .contains("other/sightline-20-loki.yaml.skip")
        );
        // Disable wins over skip, as k3s checks it first.
        let r = rules(&["sightline"], &["sightline-20-loki.yaml.skip"]);
        assert!(matches!(
            r.skip_reason(&stage),
            Some(SkipReason::Disabled { .. })
        ));
    }

    #[test]
    fn skipped_stages_lists_existing_files_and_markers() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        let base = d.path().join(BASE.trim_start_matches('/'));
        std::fs::create_dir_all(base.join("sightline")).unwrap();
        std::fs::write(base.join("sightline/sightline-10-base.yaml"), "").unwrap();
        std::fs::write(base.join("sightline/sightline-20-loki.yaml"), "").unwrap();
        std::fs::write(base.join("sightline-30-falco.yaml.skip"), "").unwrap();
        std::fs::write(base.join("traefik.yaml.skip"), "").unwrap();
        let r = ManifestRules::detect(&root, BASE, split_disable("sightline-10-base", "x"));
        let s = r.skipped_stages(&root);
        let files: Vec<&str> = s.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            files,
            vec!["sightline-10-base.yaml", "sightline-30-falco.yaml"]
        );
        assert!(
            s[1].to_string()
                .starts_with("k3s is told to skip this file: sightline-30-falco.yaml")
        );
        assert_eq!(r.skip_markers.len(), 2);
    }
}
