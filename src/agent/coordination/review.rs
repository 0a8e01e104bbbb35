//! The cluster's decision for the review commands (`plan`, `render`):
//! read-only, and only when another server holds the Lease. The holder
//! itself, or a server nobody holds the Lease against, shows what it would
//! decide now.

use crate::bundle::Bundle;
use crate::config::LoadedConfig;
use crate::facts::Facts;
use crate::k3s::lease;
use crate::k3s::{ApiError, K3sApi};
use crate::sysroot::Sysroot;

use super::record::read_record;
use super::{ClusterRecord, node_name, short};

/// The decision another server holds for the cluster, with that server's
/// name. Ok(None): this server decides (it holds the Lease, or may take
/// it). Err: why the cluster's decision cannot be used here.
pub async fn held_decision(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
) -> Result<Option<(ClusterRecord, String)>, String> {
    let api = K3sApi::from_config(root, &cfg.config).map_err(|e| format!("{e:#}"))?;
    let err = |e: ApiError| e.to_string();
    let (current, read) = tokio::join!(lease::get(&api), read_record(&api));
    let (current, read) = (current.map_err(err)?, read.map_err(err)?);
    let me = node_name(facts);
    let duration = super::lease_duration(&cfg.config);
    let holder = match lease::next_step(
        current.as_ref(),
        &me,
        duration,
        std::time::SystemTime::now(),
    ) {
        lease::Step::Follow(spec) => spec.holder_identity.unwrap_or_default(),
        _ => return Ok(None),
    };
    let Some(r) = read else {
        return Err(format!(
            "{holder} holds the Lease but has not published the cluster decision yet"
        ));
    };
    let digest = Bundle::load(root, &cfg.config)
        .map_err(|e| format!("{e:#}"))?
        .digest;
    if r.digest != digest {
        return Err(format!(
            "the cluster runs bundle {} from sightline {}; this node has bundle {}",
            short(&r.digest),
            r.version,
            short(&digest)
        ));
    }
    match r.record {
        Some(rec) => Ok(Some((rec, holder))),
        None => Err("the cluster ConfigMap's record does not parse".into()),
    }
}
