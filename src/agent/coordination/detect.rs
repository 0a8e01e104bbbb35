//! The cluster view `detect` shows.

use serde::Serialize;

use crate::bundle::Bundle;
use crate::config::LoadedConfig;
use crate::decide::ClusterDecision;
use crate::facts::Facts;
use crate::k3s::configmap::CLUSTER_CONFIGMAP;
use crate::k3s::lease;
use crate::k3s::{ApiError, K3sApi};
use crate::sysroot::Sysroot;

use super::node_name;
use super::record::read_record;

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
    let me = node_name(facts);
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
