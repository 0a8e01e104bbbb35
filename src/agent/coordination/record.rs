//! The ConfigMap `kube-system/sightline-cluster`: what it holds, reading
//! it, and writing it only when it changes.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::decide::ClusterDecision;
use crate::digest::sha256_hex;
use crate::k3s::configmap::{self, CLUSTER_CONFIGMAP, DataMap, Kind};
use crate::k3s::{ApiError, K3sApi};
use crate::state::{StageRecord, StageState, State};
use crate::sysroot::Sysroot;

use super::Holding;

/// The key of the full record in the ConfigMap.
pub(super) const RECORD_KEY: &str = "cluster.json";

/// The ConfigMap's content: the decision, the bundle and release that made
/// it, and the stage files the holder has in place (file → SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The decision.
    pub decision: ClusterDecision,
    /// The bundle's SHA256SUMS digest.
    pub bundle_digest: String,
    /// The sightline release of the holder that wrote it.
    pub sightline_version: String,
    /// The holder that wrote it.
    pub decided_by: String,
    /// The holder's stage files.
    pub files: BTreeMap<String, String>,
    /// Those of the holder's files that are no stage it renders (a stage
    /// emptied while k3s prunes its objects), verbatim, so the others can
    /// place them too. Only small, world-readable ones: never a Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub texts: BTreeMap<String, String>,
    /// The stages the holder has recorded, by name: their file and the
    /// objects its prune waits for, so that the next holder can prune
    /// them exactly as this one would have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, RecordedStage>,
}

/// A stage as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedStage {
    /// Its file in the manifests directory.
    pub file: String,
    /// REST paths of its objects.
    pub objects: Vec<String>,
}

fn recorded(state: &State) -> BTreeMap<String, RecordedStage> {
    state
        .stages
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                RecordedStage {
                    file: r.file.clone(),
                    objects: r.objects.clone(),
                },
            )
        })
        .collect()
}

/// A new holder takes over the stages the previous one recorded and this
/// server has not: those it no longer renders are then pruned by its
/// rollout, objects and all, as the previous holder's would have been. The
/// record lists the union until this holder's rollout records its own.
pub(super) async fn adopt_stages(
    root: &Sysroot,
    cfg: &Config,
    previous: Option<&ClusterRecord>,
    h: &mut Holding,
) -> Result<()> {
    let mut state = State::load(root, cfg)?;
    let wanted: Vec<&str> = h.stages.iter().map(|s| s.stage.name.as_str()).collect();
    let theirs = previous.map(|p| &p.stages);
    let adopt: Vec<(&String, &RecordedStage)> = theirs
        .into_iter()
        .flatten()
        .filter(|(name, _)| !wanted.contains(&name.as_str()) && !state.stages.contains_key(*name))
        .collect();
    if !adopt.is_empty() {
        let _lock = crate::lock::Lock::acquire(
            &root.path(cfg.lock_path()),
            std::time::Duration::from_secs(600),
        )
        .await?;
        let mut state = State::load(root, cfg)?;
        for (name, r) in &adopt {
            let on_disk = root.read(format!("{}/{}", cfg.paths.manifests_dir, r.file))?;
            tracing::info!(stage = %name, file = %r.file, "took over a stage the previous Lease holder recorded, to prune it");
            state.stages.insert(
                (*name).clone(),
                StageRecord {
                    file: r.file.clone(),
                    sha256: on_disk.map(|d| sha256_hex(&d)).unwrap_or_default(),
                    state: StageState::Pruning,
                    objects: r.objects.clone(),
                },
            );
        }
        state.save(root, cfg)?;
    }
    state = State::load(root, cfg)?;
    let mut all = theirs.cloned().unwrap_or_default();
    all.extend(recorded(&state));
    h.record.stages = all;
    Ok(())
}

impl ClusterRecord {
    fn to_data(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert(
            RECORD_KEY.into(),
            serde_json::to_string_pretty(self).expect("serializable"),
        );
        // Flat keys for `kubectl get cm`, and for a release that cannot
        // parse a newer record but must still see the skew.
        d.insert("tier".into(), self.decision.tier.to_string());
        d.insert(
            "runtimeSecurity".into(),
            self.decision.runtime_security.clone(),
        );
        d.insert(
            "networkPolicies".into(),
            self.decision.network_policies.to_string(),
        );
        d.insert("bundleDigest".into(), self.bundle_digest.clone());
        d.insert("sightlineVersion".into(), self.sightline_version.clone());
        d
    }
}

/// The ConfigMap as read: its flat keys always, the record when it parses.
pub(crate) struct Read {
    pub(super) map: DataMap,
    pub(super) version: String,
    pub(super) digest: String,
    pub(super) record: Option<ClusterRecord>,
}

impl Read {
    /// The ConfigMap's flat keys and record.
    pub(super) fn from_map(map: DataMap) -> Read {
        let record = map
            .data
            .get(RECORD_KEY)
            .and_then(|t| serde_json::from_str::<ClusterRecord>(t).ok());
        Read {
            version: map
                .data
                .get("sightlineVersion")
                .cloned()
                .unwrap_or_default(),
            digest: map.data.get("bundleDigest").cloned().unwrap_or_default(),
            record,
            map,
        }
    }
}

pub(super) async fn read_record(api: &K3sApi) -> Result<Option<Read>, ApiError> {
    Ok(configmap::get(api, Kind::ConfigMap, CLUSTER_CONFIGMAP)
        .await?
        .map(Read::from_map))
}

/// sightline's stage files in the manifests directory, with their SHA-256.
pub fn stage_files_on_disk(root: &Sysroot, cfg: &Config) -> Result<BTreeMap<String, String>> {
    let dir = &cfg.paths.manifests_dir;
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(root.path(dir)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {dir}")),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("sightline-") && name.ends_with(".yaml") {
            let data = std::fs::read(e.path()).with_context(|| format!("reading {dir}/{name}"))?;
            out.insert(name, sha256_hex(&data));
        }
    }
    Ok(out)
}

/// Files on disk that are no rendered stage (`rendered`: file → SHA-256),
/// at most 1 KiB and not private to root, with their text.
pub fn loose_texts(
    root: &Sysroot,
    cfg: &Config,
    rendered: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for (name, sha) in stage_files_on_disk(root, cfg)? {
        if rendered.get(&name) == Some(&sha) {
            continue;
        }
        let path = root.path(format!("{}/{name}", cfg.paths.manifests_dir));
        let meta = std::fs::metadata(&path).with_context(|| format!("reading {name}"))?;
        if meta.len() > 1024 || meta.permissions().mode() & 0o077 == 0 {
            continue;
        }
        if let Ok(text) = String::from_utf8(std::fs::read(&path)?) {
            out.insert(name, text);
        }
    }
    Ok(out)
}

/// The record without its reasons: some quote memory measured at this
/// pass ("measured now: 5.8 GiB available"), which moves on every pass.
fn material(r: &ClusterRecord) -> ClusterRecord {
    let mut r = r.clone();
    r.decision.reasons.clear();
    r
}

/// Writes the record when a choice, the bundle, the release or the files
/// changed (a no-op writes nothing); the reasons are refreshed with them.
pub async fn publish(api: &K3sApi, h: &mut Holding) -> Result<()> {
    let data = h.record.to_data();
    let stored = h
        .map
        .as_ref()
        .and_then(|m| m.data.get(RECORD_KEY))
        .and_then(|t| serde_json::from_str::<ClusterRecord>(t).ok());
    if stored.is_some_and(|s| material(&s) == material(&h.record)) {
        h.memory.set_record(h.map.as_ref());
        return Ok(());
    }
    let written = configmap::put(api, Kind::ConfigMap, CLUSTER_CONFIGMAP, &data, h.map.as_ref())
        .await
        .with_context(|| {
            format!("writing the ConfigMap kube-system/{CLUSTER_CONFIGMAP} (another server changed it: the Lease moved; the next pass follows)")
        })?;
    tracing::info!(
        files = h.record.files.len(),
        "published the cluster decision"
    );
    h.map = Some(written);
    h.memory.set_record(h.map.as_ref());
    Ok(())
}

/// After the holder's rollout: record the files it has in place now.
pub async fn publish_files(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &Config,
    h: &mut Holding,
) -> Result<()> {
    h.record.files = stage_files_on_disk(root, cfg)?;
    h.record.texts = loose_texts(root, cfg, &h.rendered)?;
    h.record.stages = recorded(&State::load(root, cfg)?);
    publish(api, h).await
}
