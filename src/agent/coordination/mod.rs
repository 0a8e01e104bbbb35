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

mod detect;
mod follow;
mod memory;
mod record;
mod review;
mod secrets;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::bundle::secrets::Secrets;
use crate::bundle::{Bundle, RenderedStage, StageInputs, render_stages};
use crate::config::{Config, LoadedConfig};
use crate::decide::ClusterDecision;
use crate::facts::{Facts, Gpu};
use crate::k3s::K3sApi;
use crate::k3s::configmap::DataMap;
use crate::k3s::lease::{self, LeaseView};
use crate::sysroot::Sysroot;

pub use detect::{ClusterDetect, detect_cluster};
pub use memory::Memory;
pub(crate) use record::Read;
use record::read_record;
pub use record::{ClusterRecord, publish, publish_files, stage_files_on_disk};
pub use review::held_decision;
use secrets::cluster_secrets;

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

/// This node's name as k3s registers it (see `facts::NodeName`): the Lease
/// identity and the Node the holder looks its kernel facts up on.
pub fn node_name(facts: &Facts) -> String {
    facts.k3s.node_name.name.clone()
}

/// The lease duration from the configuration.
pub fn lease_duration(cfg: &Config) -> Duration {
    Duration::from_secs(cfg.k3s.lease_duration_seconds)
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
    /// The rendered stages' files and SHA-256.
    rendered: BTreeMap<String, String>,
    /// The view for status.
    pub view: ClusterView,
    /// Where the ConfigMap as written is remembered.
    memory: Memory,
}

/// The outcome of coordinating, before any rollout.
pub enum Coordinated {
    /// This server holds the Lease and rolls out.
    Holder(Box<Holding>),
    /// Another server does; this one mirrored (or could not mirror) its files.
    Done(ClusterView),
}

/// One pass of coordination: Lease, decision, secrets, and a follower's mirror.
///
/// A holder that remembers its Lease renews it with one PUT while it reads
/// the nodes (and, in a new process, the ConfigMap and the Secret) at the
/// same time: one round trip at rest. Otherwise the Lease and the ConfigMap
/// are read together, the skew checked, and only then is the Lease written.
/// Any error forgets what `memory` held, so the next pass reads everything.
pub async fn coordinate(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    memory: &Memory,
) -> Result<Coordinated> {
    let r = coordinate_inner(api, root, cfg, facts, memory).await;
    if r.is_err() {
        memory.forget(root, &cfg.config);
    }
    r
}

async fn coordinate_inner(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    memory: &Memory,
) -> Result<Coordinated> {
    let me = node_name(facts);
    let mine = env!("CARGO_PKG_VERSION");
    let duration = lease_duration(&cfg.config);
    let bundle = Bundle::load(root, &cfg.config)?;
    let cached = memory.lease(root, &cfg.config);
    if let Some(c) = lease::renewable(cached.as_ref(), &me, std::time::SystemTime::now()) {
        // Holding it continuously, this node wrote the ConfigMap last.
        let known = memory.record();
        let (renewed, nodes, read, remote) = tokio::join!(
            lease::renew_cached(api, c, &me, duration),
            crate::k3s::nodes::list(api),
            async {
                match known {
                    Some(m) => Ok(Some(Read::from_map(m))),
                    None => read_record(api).await,
                }
            },
            secrets::fetch(api, root, &cfg.config, memory),
        );
        if let Some(elected) = renewed? {
            memory.set_lease(root, &cfg.config, &me, &elected.lease);
            let read = read?;
            if let Some(r) = &read
                && newer(&r.version, mine)
            {
                // Renewed before seeing the skew: let the Lease lapse so
                // the newer server takes it.
                memory.forget(root, &cfg.config);
                return Ok(Coordinated::Done(skewed(&me, r, &bundle.digest)));
            }
            let held = Held {
                lease: elected.view,
                nodes: nodes?,
                read,
                remote: remote?,
            };
            return hold(api, root, cfg, facts, memory, &me, held).await;
        }
    }
    let (current, read) = tokio::join!(lease::get(api), read_record(api));
    let read = read?;
    if let Some(r) = &read
        && newer(&r.version, mine)
    {
        return Ok(Coordinated::Done(skewed(&me, r, &bundle.digest)));
    }
    let current = current?;
    let may_hold = !matches!(
        lease::next_step(
            current.as_ref(),
            &me,
            duration,
            std::time::SystemTime::now()
        ),
        lease::Step::Follow(_)
    );
    if !may_hold {
        let elected = lease::settle(api, current, &me, duration).await?;
        memory.set_lease(root, &cfg.config, &me, &elected.lease);
        let mut view =
            follow::follow(api, root, cfg, facts, read.as_ref(), &bundle, memory).await?;
        view.lease = Some(elected.view);
        return Ok(Coordinated::Done(view));
    }
    let (elected, nodes, remote) = tokio::join!(
        lease::settle(api, current, &me, duration),
        crate::k3s::nodes::list(api),
        secrets::fetch(api, root, &cfg.config, memory),
    );
    let elected = elected?;
    memory.set_lease(root, &cfg.config, &me, &elected.lease);
    if !elected.view.held_here {
        // Lost the race: another server wrote first.
        let mut view =
            follow::follow(api, root, cfg, facts, read.as_ref(), &bundle, memory).await?;
        view.lease = Some(elected.view);
        return Ok(Coordinated::Done(view));
    }
    let held = Held {
        lease: elected.view,
        nodes: nodes?,
        read,
        remote: remote?,
    };
    hold(api, root, cfg, facts, memory, &me, held).await
}

/// What the holder read in its Lease round.
struct Held {
    lease: LeaseView,
    nodes: Vec<crate::k3s::nodes::NodeInfo>,
    read: Option<Read>,
    remote: secrets::Remote,
}

/// The holder: decides for the cluster, renders, and publishes the record.
async fn hold(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    memory: &Memory,
    me: &str,
    held: Held,
) -> Result<Coordinated> {
    let mine = env!("CARGO_PKG_VERSION");
    let Held {
        lease,
        mut nodes,
        read,
        remote,
    } = held;
    match nodes.iter_mut().find(|n| n.name == me) {
        Some(n) => n.btf = Some(facts.btf),
        None => {
            tracing::warn!(node = %me, "no Node is named as k3s names this server; its kernel facts are left out of the cluster decision")
        }
    }
    let state = crate::state::State::load(root, &cfg.config).unwrap_or_default();
    let decision = crate::decide::decide_cluster(cfg, facts, state.tier.as_ref(), &nodes);
    let secrets = cluster_secrets(api, root, &cfg.config, true, remote, memory)
        .await?
        .expect("the holder always has credentials");
    let (stages, bundle) = render_cluster_stages(root, &cfg.config, facts, &decision, &secrets)?;
    let rendered: BTreeMap<String, String> = stages
        .iter()
        .map(|s| (s.file_name.clone(), crate::digest::sha256_hex(&s.content)))
        .collect();
    let record = ClusterRecord {
        decision,
        bundle_digest: bundle.digest.clone(),
        sightline_version: mine.into(),
        decided_by: me.to_string(),
        files: stage_files_on_disk(root, &cfg.config)?,
        texts: record::loose_texts(root, &cfg.config, &rendered)?,
        stages: BTreeMap::new(),
    };
    let previous = read.as_ref().and_then(|r| r.record.clone());
    let mut holding = Holding {
        stages,
        rendered,
        view: ClusterView {
            node: me.to_string(),
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
        memory: memory.clone(),
    };
    record::adopt_stages(root, &cfg.config, previous.as_ref(), &mut holding).await?;
    publish(api, &mut holding).await?;
    Ok(Coordinated::Holder(Box::new(holding)))
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

/// Renews the Lease while the holder's rollout runs (one PUT each time
/// while nobody else wrote it); returns why it was lost.
pub async fn keep_renewing(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &Config,
    me: &str,
    memory: &Memory,
) -> String {
    let duration = lease_duration(cfg);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(duration / 3).await;
        let cached = memory.lease(root, cfg);
        match lease::acquire_or_renew(api, me, duration, cached.as_ref()).await {
            Ok(e) if e.view.held_here => {
                memory.set_lease(root, cfg, me, &e.lease);
                renewed = Instant::now();
            }
            Ok(e) => {
                memory.forget(root, cfg);
                return format!("the Lease passed to {}", e.view.holder);
            }
            Err(e) if renewed.elapsed() >= duration => {
                return format!("the Lease could not be renewed within its duration: {e}");
            }
            Err(_) => {}
        }
    }
}
