//! `index.toml`: pinned charts and stages in install order.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::decide::Tier;

/// A pinned chart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    /// Chart name in its repository.
    pub chart: String,
    /// Helm repository URL.
    pub repo: String,
    /// Exact version.
    pub version: String,
}

/// A stage's Helm release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelmRelease {
    /// Key into `[charts]`; also the HelmChart (release) name.
    pub chart: String,
    /// Target namespace.
    pub namespace: String,
    /// helm-controller timeout, e.g. `10m`.
    pub timeout: String,
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Unique, RFC 1123 name.
    pub name: String,
    /// Install order; also the file name prefix.
    pub order: u32,
    /// Tiers this stage belongs to.
    pub tiers: Vec<Tier>,
    /// Conditions from the decisions: `tetragon`, `falco`, `gpu`.
    #[serde(default)]
    pub requires: Vec<String>,
    /// The Helm release, if any.
    #[serde(default)]
    pub helm: Option<HelmRelease>,
    /// Static manifests copied verbatim (bundle paths).
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Documents sightline generates from its config.
    #[serde(default)]
    pub generated: Vec<String>,
    /// Workloads that must be ready: `kind/namespace/name`.
    #[serde(default)]
    pub workloads: Vec<String>,
}

impl Stage {
    /// The stage file's base name (also the Addon name k3s gives it).
    pub fn base_name(&self) -> String {
        format!("sightline-{:02}-{}", self.order, self.name)
    }

    /// The stage file's name.
    pub fn file_name(&self) -> String {
        format!("{}.yaml", self.base_name())
    }
}

/// The index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Format version.
    pub schema: u32,
    /// Pinned charts by key.
    pub charts: BTreeMap<String, Chart>,
    /// Stages, in install order.
    #[serde(rename = "stage")]
    pub stages: Vec<Stage>,
}

/// Conditions a stage may require.
pub const CONDITIONS: [&str; 4] = ["tetragon", "falco", "gpu", "netpol"];
/// Generated documents sightline knows how to make.
pub const GENERATORS: [&str; 7] = [
    "grafana-admin",
    "alertmanager-config",
    "alertmanager-files",
    "grafana-netpol",
    "alertmanager-netpol",
    "uptime-kuma-admin",
    "uptime-kuma-monitors",
];

/// Parses and checks an index.
pub fn parse(text: &str) -> Result<Index> {
    let idx: Index = toml::from_str(text).context("index.toml")?;
    if idx.schema != 1 {
        bail!("index.toml schema {} is not supported", idx.schema);
    }
    let mut names = std::collections::BTreeSet::new();
    let mut last = 0;
    for s in &idx.stages {
        if !names.insert(s.name.clone()) {
            bail!("stage {} is listed twice", s.name);
        }
        let rfc1123 = !s.name.is_empty()
            && s.name.len() <= 50
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.name.starts_with('-')
            && !s.name.ends_with('-');
        if !rfc1123 {
            bail!("stage name {:?} is not an RFC 1123 label", s.name);
        }
        if s.order < last {
            bail!(
                "stage {} (order {}) is listed after a later stage",
                s.name,
                s.order
            );
        }
        last = s.order;
        if s.order > 99 {
            bail!(
                "stage {} order {} has more than two digits",
                s.name,
                s.order
            );
        }
        for r in &s.requires {
            if !CONDITIONS.contains(&r.as_str()) {
                bail!("stage {} requires unknown condition {r:?}", s.name);
            }
        }
        for g in &s.generated {
            if !GENERATORS.contains(&g.as_str()) {
                bail!("stage {} names unknown generator {g:?}", s.name);
            }
        }
        if let Some(h) = &s.helm
            && !idx.charts.contains_key(&h.chart)
        {
            bail!(
                "stage {} uses chart {} which [charts] does not pin",
                s.name,
                h.chart
            );
        }
        for w in &s.workloads {
            parse_workload(w).with_context(|| format!("stage {}", s.name))?;
        }
        if s.helm.is_none() && s.manifests.is_empty() && s.generated.is_empty() {
            bail!("stage {} has nothing to install", s.name);
        }
    }
    Ok(idx)
}

/// A workload reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct WorkloadRef {
    /// deployment, daemonset or statefulset.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Parses `kind/namespace/name`.
pub fn parse_workload(s: &str) -> Result<WorkloadRef> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [
            kind @ ("deployment" | "daemonset" | "statefulset"),
            ns,
            name,
        ] if !ns.is_empty() && !name.is_empty() => Ok(WorkloadRef {
            kind: kind.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
        }),
        _ => bail!("workload {s:?} is not deployment|daemonset|statefulset/NAMESPACE/NAME"),
    }
}
