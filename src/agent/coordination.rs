//! Several k3s servers, one rollout writer.
//!
//! Every server's deploy controller applies its own manifests directory
//! into one shared set of Addons (k3s `pkg/deploy/controller.go`), so the
//! servers' stage files must be byte-identical, and only one of them may
//! move the rollout forward. The Lease `kube-system/sightline` names that
//! one (the holder); it decides for the cluster, keeps the decision in the
//! ConfigMap `kube-system/sightline-cluster` together with the stage files
//! it has in place, and runs the gated rollout. The other servers (the
//! followers) render the same stages from that decision and the same
//! bundle, and place exactly the files the holder has, once every one of
//! them matches byte for byte. A server whose bundle differs from the
//! cluster's writes no stage file at all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::bundle::secrets::{Secrets, grafana_password_path, store_grafana_password};
use crate::bundle::{Bundle, RenderedStage, StageInputs, render_stages};
use crate::config::{Config, LoadedConfig};
use crate::decide::ClusterDecision;
use crate::digest::sha256_hex;
use crate::facts::{Facts, Gpu};
use crate::k3s::configmap::{self, CLUSTER_CONFIGMAP, CLUSTER_SECRET, DataMap, Kind};
use crate::k3s::lease::{self, LeaseView};
use crate::k3s::{ApiError, K3sApi};
use crate::sysroot::Sysroot;

/// The key of the Grafana admin password in the cluster Secret.
const GRAFANA_KEY: &str = "grafana-admin-password";
/// The key of the full record in the ConfigMap.
const RECORD_KEY: &str = "cluster.json";

/// This node's part in the cluster layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    /// Holds the Lease: decides and runs the rollout.
    Holder,
    /// Another server holds the Lease: mirrors its files.
    Follower,
    /// Its bundle differs from the cluster's: writes no stage file.
    Skewed,
    /// A k3s agent node: host layer only.
    Agent,
    /// The API did not answer: nothing known about the cluster.
    Unknown,
}

impl ClusterRole {
    /// For status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ClusterRole::Holder => "holder",
            ClusterRole::Follower => "follower",
            ClusterRole::Skewed => "skewed",
            ClusterRole::Agent => "agent",
            ClusterRole::Unknown => "unknown",
        }
    }
}

/// What `status` shows about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name (its Lease identity).
    pub node: String,
    /// Its role.
    pub role: ClusterRole,
    /// Who holds the Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    /// The cluster decision, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The bundle digest the cluster runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_bundle: Option<String>,
    /// The sightline release that decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_version: Option<String>,
    /// Whether this server's stage files are the holder's, byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_match: Option<bool>,
    /// What to know (skew, mismatching files, waiting for the holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ClusterView {
    /// A view with only a role and a detail.
    pub fn bare(node: &str, role: ClusterRole, detail: Option<String>) -> ClusterView {
        ClusterView {
            node: node.to_string(),
            role,
            lease: None,
            decision: None,
            cluster_bundle: None,
            cluster_version: None,
            files_match: None,
            detail,
        }
    }

    /// One line for `status`.
    pub fn line(&self) -> String {
        let mut s = format!("{} ({})", self.node, self.role.name());
        if let Some(l) = &self.lease {
            s.push_str(&format!("; Lease held by {}", l.holder));
        }
        if let Some(m) = self.files_match {
            s.push_str(if m {
                "; stage files match the cluster's"
            } else {
                "; stage files do NOT match the cluster's"
            });
        }
        s
    }
}

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
struct Read {
    map: DataMap,
    version: String,
    digest: String,
    record: Option<ClusterRecord>,
}

async fn read_record(api: &K3sApi) -> Result<Option<Read>, ApiError> {
    let Some(map) = configmap::get(api, Kind::ConfigMap, CLUSTER_CONFIGMAP).await? else {
        return Ok(None);
    };
    let record = map
        .data
        .get(RECORD_KEY)
        .and_then(|t| serde_json::from_str::<ClusterRecord>(t).ok());
    Ok(Some(Read {
        version: map
            .data
            .get("sightlineVersion")
            .cloned()
            .unwrap_or_default(),
        digest: map.data.get("bundleDigest").cloned().unwrap_or_default(),
        record,
        map,
    }))
}

/// `a` is a later release than `b` (MAJOR.MINOR.PATCH, pre-release ignored).
pub fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['-', '+'])
            .next()
            .unwrap_or("")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parse(a) > parse(b)
}

/// This node's name, as k3s names it: `node-name` from k3s's config file
/// and drop-ins, else the hostname, lowercased (k3s
/// `pkg/agent/config/config.go`, `getHostnameAndIPs`). A `--node-name` on
/// k3s's command line is not followed.
pub fn node_name(root: &Sysroot, facts: &Facts) -> String {
    if let Some(v) = facts.k3s.config.values(root, "node-name").pop() {
        return v.value.to_lowercase();
    }
    for p in ["/etc/hostname", "/proc/sys/kernel/hostname"] {
        if let Ok(Some(t)) = root.read_to_string(p)
            && let Some(line) = t.lines().map(str::trim).find(|l| !l.is_empty())
        {
            return line.to_lowercase();
        }
    }
    "localhost".into()
}

/// The lease duration from the configuration.
pub fn lease_duration(cfg: &Config) -> Duration {
    Duration::from_secs(cfg.k3s.lease_duration_seconds)
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

/// The credentials for the cluster: the holder publishes its own (made
/// once, kept locally) unless the cluster has them already; a follower
/// takes the cluster's. Either keeps the cluster's copy locally, 0600.
/// None: a follower before the holder published them.
async fn cluster_secrets(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &Config,
    holder: bool,
) -> Result<Option<Secrets>> {
    let remote = configmap::get(api, Kind::Secret, CLUSTER_SECRET).await?;
    let from_cluster = remote
        .as_ref()
        .and_then(|r| r.data.get(GRAFANA_KEY))
        .cloned();
    if let Some(p) = &from_cluster {
        if store_grafana_password(root, cfg, p)? {
            tracing::info!(path = %grafana_password_path(cfg), "stored the cluster's Grafana password locally");
        }
    } else if !holder {
        return Ok(None);
    }
    let (local, _) = crate::bundle::secrets::load(root, cfg, true)?;
    if from_cluster.is_none() {
        let data = BTreeMap::from([(
            GRAFANA_KEY.to_string(),
            local.grafana_admin_password.clone(),
        )]);
        match configmap::put(api, Kind::Secret, CLUSTER_SECRET, &data, None).await {
            Ok(_) => tracing::info!("published the generated credentials for the cluster"),
            // Another holder published first (the Lease changed hands
            // mid-pass): theirs stands, ours is dropped.
            Err(e) if e.is_conflict() => {
                return Box::pin(cluster_secrets(api, root, cfg, false)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(local))
}

/// Renders the stages from a cluster decision, as every server does.
pub fn render_cluster_stages(
    root: &Sysroot,
    cfg: &Config,
    facts: &Facts,
    d: &ClusterDecision,
    secrets: &Secrets,
) -> Result<(Vec<RenderedStage>, Bundle)> {
    let bundle = Bundle::load(root, cfg)?;
    // The GPU stage follows the cluster, not this server's devices.
    let mut facts = facts.clone();
    facts.gpu = match (d.gpu, facts.gpu.take()) {
        (true, Some(g)) => Some(g),
        (true, None) => Some(Gpu {
            vendor: "nvidia".into(),
            devices: 1,
        }),
        (false, _) => None,
    };
    let inputs = StageInputs {
        cfg,
        facts: &facts,
        tier: d.tier,
        runtime_security: d.runtime(),
        secrets,
        airgap_charts: super::cluster::airgap_charts(root, cfg)?,
        network_policies: d.network_policies,
        user_values: super::cluster::user_values(root, cfg)?,
    };
    Ok((render_stages(&bundle, &inputs)?, bundle))
}

/// What the holder does before its rollout.
pub struct Holding {
    /// The stages to roll out.
    pub stages: Vec<RenderedStage>,
    /// The record as published.
    pub record: ClusterRecord,
    /// The ConfigMap as last written or read.
    map: Option<DataMap>,
    /// The view for status.
    pub view: ClusterView,
}

/// The outcome of coordinating, before any rollout.
pub enum Coordinated {
    /// This server holds the Lease and rolls out.
    Holder(Box<Holding>),
    /// Another server does; this one mirrored (or could not mirror) its files.
    Done(ClusterView),
}

/// One pass of coordination: Lease, decision, secrets, and a follower's mirror.
pub async fn coordinate(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
) -> Result<Coordinated> {
    let me = node_name(root, facts);
    let mine = env!("CARGO_PKG_VERSION");
    let bundle = Bundle::load(root, &cfg.config)?;
    let read = read_record(api).await?;
    if let Some(r) = &read
        && newer(&r.version, mine)
    {
        return Ok(Coordinated::Done(skewed(&me, r, &bundle.digest)));
    }
    let lease = lease::acquire_or_renew(api, &me, lease_duration(&cfg.config)).await?;
    if !lease.held_here {
        let mut view = follow(api, root, cfg, facts, &me, read.as_ref(), &bundle).await?;
        view.lease = Some(lease);
        return Ok(Coordinated::Done(view));
    }
    let mut nodes = crate::k3s::nodes::list(api).await?;
    match nodes.iter_mut().find(|n| n.name == me) {
        Some(n) => n.btf = Some(facts.btf),
        None => {
            tracing::warn!(node = %me, "this server's hostname names no Node; is k3s's node-name set? Its kernel facts are left out of the cluster decision")
        }
    }
    let state = crate::state::State::load(root, &cfg.config).unwrap_or_default();
    let decision = crate::decide::decide_cluster(cfg, facts, state.tier.as_ref(), &nodes);
    let secrets = cluster_secrets(api, root, &cfg.config, true)
        .await?
        .expect("the holder always has credentials");
    let (stages, bundle) = render_cluster_stages(root, &cfg.config, facts, &decision, &secrets)?;
    let record = ClusterRecord {
        decision,
        bundle_digest: bundle.digest.clone(),
        sightline_version: mine.into(),
        decided_by: me.clone(),
        files: stage_files_on_disk(root, &cfg.config)?,
    };
    let mut holding = Holding {
        stages,
        view: ClusterView {
            node: me.clone(),
            role: ClusterRole::Holder,
            lease: Some(lease),
            decision: Some(record.decision.summary()),
            cluster_bundle: Some(bundle.digest.clone()),
            cluster_version: Some(mine.into()),
            files_match: Some(true),
            detail: None,
        },
        record,
        map: read.map(|r| r.map),
    };
    publish(api, &mut holding).await?;
    Ok(Coordinated::Holder(Box::new(holding)))
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
    publish(api, h).await
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

fn skewed(me: &str, r: &Read, digest: &str) -> ClusterView {
    let mine = env!("CARGO_PKG_VERSION");
    let detail = if newer(&r.version, mine) {
        format!(
            "cluster runs bundle {} from sightline {}; this node has {} from sightline {mine}: waiting for the upgrade",
            short(&r.digest),
            r.version,
            short(digest)
        )
    } else {
        format!(
            "cluster runs bundle {} from sightline {}; this node has {} from sightline {mine}: the cluster moves to it when the Lease holder runs this release",
            short(&r.digest),
            r.version,
            short(digest)
        )
    };
    tracing::warn!(cluster_bundle = %r.digest, node_bundle = %digest, "version skew: writing no stage files");
    ClusterView {
        node: me.into(),
        role: ClusterRole::Skewed,
        lease: None,
        decision: r.record.as_ref().map(|x| x.decision.summary()),
        cluster_bundle: Some(r.digest.clone()),
        cluster_version: Some(r.version.clone()),
        files_match: Some(false),
        detail: Some(detail),
    }
}

/// A follower: renders from the cluster's decision and places exactly the
/// holder's files, or nothing when any of them differs.
async fn follow(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    me: &str,
    read: Option<&Read>,
    bundle: &Bundle,
) -> Result<ClusterView> {
    annotate_btf(api, me, facts.btf).await;
    let Some(r) = read else {
        return Ok(ClusterView::bare(
            me,
            ClusterRole::Follower,
            Some("the Lease holder has not published the cluster decision yet".into()),
        ));
    };
    if r.digest != bundle.digest {
        return Ok(skewed(me, r, &bundle.digest));
    }
    let Some(rec) = &r.record else {
        anyhow::bail!(
            "the ConfigMap kube-system/{CLUSTER_CONFIGMAP} key {RECORD_KEY} does not parse; the Lease holder rewrites it on its next pass"
        );
    };
    let mut view = ClusterView {
        node: me.into(),
        role: ClusterRole::Follower,
        lease: None,
        decision: Some(rec.decision.summary()),
        cluster_bundle: Some(r.digest.clone()),
        cluster_version: Some(r.version.clone()),
        files_match: None,
        detail: None,
    };
    let Some(secrets) = cluster_secrets(api, root, &cfg.config, false).await? else {
        view.detail =
            Some("the Lease holder has not published the cluster's credentials yet".into());
        return Ok(view);
    };
    let (stages, _) = render_cluster_stages(root, &cfg.config, facts, &rec.decision, &secrets)?;
    let mut differ = Vec::new();
    let mut place = Vec::new();
    for (file, sha) in &rec.files {
        match stages.iter().find(|s| &s.file_name == file) {
            Some(s) if sha256_hex(&s.content) == *sha => place.push(s),
            _ => differ.push(file.clone()),
        }
    }
    if !differ.is_empty() {
        view.files_match = Some(false);
        view.detail = Some(format!(
            "this server renders {} differently from the Lease holder {}: compare /etc/sightline/config.toml and [bundle] values_dir on both; no stage file was written",
            differ.join(", "),
            rec.decided_by
        ));
        tracing::warn!(files = ?differ, "stage files differ from the Lease holder's; writing none");
        return Ok(view);
    }
    mirror(root, &cfg.config, &place, &rec.files).await?;
    view.files_match = Some(stage_files_on_disk(root, &cfg.config)? == rec.files);
    Ok(view)
}

/// Places the holder's files and removes those it no longer has.
async fn mirror(
    root: &Sysroot,
    cfg: &Config,
    place: &[&RenderedStage],
    files: &BTreeMap<String, String>,
) -> Result<()> {
    let on_disk = stage_files_on_disk(root, cfg)?;
    let dir = &cfg.paths.manifests_dir;
    let stale: Vec<&String> = on_disk.keys().filter(|f| !files.contains_key(*f)).collect();
    let todo: Vec<&&RenderedStage> = place
        .iter()
        .filter(|s| on_disk.get(&s.file_name) != files.get(&s.file_name))
        .collect();
    if stale.is_empty() && todo.is_empty() {
        return Ok(());
    }
    let _lock =
        crate::lock::Lock::acquire(&root.path(cfg.lock_path()), Duration::from_secs(600)).await?;
    crate::atomic::create_dir_all(&root.path(dir), 0o755)
        .with_context(|| format!("creating {dir}"))?;
    for s in todo {
        let path = format!("{dir}/{}", s.file_name);
        let mode = if s.sensitive { 0o600 } else { 0o644 };
        crate::atomic::write_atomic(&root.path(&path), &s.content, mode)
            .with_context(|| format!("writing {path}"))?;
        tracing::info!(path = %path, "placed the Lease holder's stage file");
    }
    for f in stale {
        let path = format!("{dir}/{f}");
        crate::atomic::remove_file(&root.path(&path))
            .with_context(|| format!("removing {path}"))?;
        tracing::info!(path = %path, "removed a stage file the Lease holder no longer has");
    }
    Ok(())
}

/// Records this server's kernel BTF on its Node for the holder's decision;
/// only when the Node says otherwise, so a no-op writes nothing.
async fn annotate_btf(api: &K3sApi, me: &str, btf: bool) {
    let path = format!("/api/v1/nodes/{me}");
    let current = api
        .get_opt::<serde_json::Value>(&path)
        .await
        .ok()
        .flatten()
        .map(|n| n["metadata"]["annotations"][crate::k3s::nodes::BTF_ANNOTATION].clone());
    if current.as_ref().and_then(|v| v.as_str()) == Some(if btf { "true" } else { "false" }) {
        return;
    }
    if current.is_none() {
        return;
    }
    if let Err(e) = crate::k3s::nodes::annotate_btf(api, me, btf).await {
        tracing::warn!(error = %e, "could not record this node's kernel BTF on its Node");
    }
}

/// Renews the Lease while the holder's rollout runs; returns why it was lost.
pub async fn keep_renewing(api: &K3sApi, me: &str, duration: Duration) -> String {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(duration / 3).await;
        match lease::acquire_or_renew(api, me, duration).await {
            Ok(v) if v.held_here => renewed = Instant::now(),
            Ok(v) => return format!("the Lease passed to {}", v.holder),
            Err(e) if renewed.elapsed() >= duration => {
                return format!("the Lease could not be renewed within its duration: {e}");
            }
            Err(_) => {}
        }
    }
}

/// The cluster as `detect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterDetect {
    /// Where the decision comes from.
    pub source: String,
    /// Who holds the Lease, if anyone.
    pub lease_holder: Option<String>,
    /// The decision.
    pub decision: ClusterDecision,
}

/// The cluster view for `detect`, read-only: the stored decision when this
/// server's bundle is the cluster's, else what the holder would decide
/// from the nodes now. Err: why the API gives no view (then `detect`
/// shows this machine's). None on a node that is not a k3s server.
pub async fn detect_cluster(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
) -> Result<Option<ClusterDetect>, String> {
    if facts.k3s.role != crate::facts::K3sRole::Server {
        return Ok(None);
    }
    let api = K3sApi::from_config(root, &cfg.config).map_err(|e| format!("{e:#}"))?;
    api.readyz().await?;
    let err = |e: ApiError| e.to_string();
    let lease_holder = lease::get(&api)
        .await
        .map_err(err)?
        .and_then(|l| l.spec.holder_identity);
    let digest = Bundle::load(root, &cfg.config)
        .map_err(|e| format!("{e:#}"))?
        .digest;
    if let Some(r) = read_record(&api).await.map_err(err)?
        && let Some(rec) = r.record
        && r.digest == digest
    {
        return Ok(Some(ClusterDetect {
            source: format!(
                "ConfigMap kube-system/{CLUSTER_CONFIGMAP}, decided by {} (sightline {})",
                rec.decided_by, rec.sightline_version
            ),
            lease_holder,
            decision: rec.decision,
        }));
    }
    let me = node_name(root, facts);
    let mut nodes = crate::k3s::nodes::list(&api).await.map_err(err)?;
    if let Some(n) = nodes.iter_mut().find(|n| n.name == me) {
        n.btf = Some(facts.btf);
    }
    let state = crate::state::State::load(root, &cfg.config).unwrap_or_default();
    Ok(Some(ClusterDetect {
        source: format!(
            "the {} node(s) the API lists; no decision for this bundle is stored yet",
            nodes.len()
        ),
        lease_holder,
        decision: crate::decide::decide_cluster(cfg, facts, state.tier.as_ref(), &nodes),
    }))
}
