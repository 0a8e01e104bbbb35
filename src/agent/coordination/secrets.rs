//! Credentials generated once for the cluster, shared through the Secret
//! `kube-system/sightline-cluster-secrets`.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::bundle::secrets::{Secrets, generated_passwords, store_password};
use crate::config::Config;
use crate::k3s::configmap::{self, CLUSTER_SECRET, DataMap, Kind};
use crate::k3s::{ApiError, K3sApi};
use crate::sysroot::Sysroot;

use super::Memory;

/// The cluster's Secret for this pass.
pub(super) enum Remote {
    /// This node stored the cluster's credentials on an earlier pass and
    /// its copies are unchanged: not read again.
    Stored,
    /// As read (None: there is none yet).
    Read(Option<DataMap>),
}

/// A digest of this node's copies of the shared credentials; None while
/// one is missing.
fn local_digest(root: &Sysroot, cfg: &Config) -> Option<String> {
    let mut all = String::new();
    for (key, path) in generated_passwords(cfg) {
        let value = root.read_to_string(&path).ok().flatten()?;
        all.push_str(&format!("{key}={}\n", value.trim()));
    }
    Some(crate::digest::sha256_hex(all.as_bytes()))
}

/// Reads the cluster's Secret unless `memory` says this node stored it and
/// the local copies still have the digest they had then.
pub(super) async fn fetch(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &Config,
    memory: &Memory,
) -> Result<Remote, ApiError> {
    if memory
        .secrets()
        .is_some_and(|d| Some(d) == local_digest(root, cfg))
    {
        return Ok(Remote::Stored);
    }
    Ok(Remote::Read(
        configmap::get(api, Kind::Secret, CLUSTER_SECRET).await?,
    ))
}

/// The credentials for the cluster: the holder publishes its own (made
/// once, kept locally) unless the cluster has them already; a follower
/// takes the cluster's. Either keeps the cluster's copies locally, 0600.
/// None: a follower before the holder published them.
pub(super) async fn cluster_secrets(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &Config,
    holder: bool,
    remote: Remote,
    memory: &Memory,
) -> Result<Option<Secrets>> {
    let remote = match remote {
        Remote::Stored => return Ok(Some(crate::bundle::secrets::load(root, cfg, true)?.0)),
        Remote::Read(r) => r,
    };
    let shared = generated_passwords(cfg);
    let from_cluster: Vec<Option<String>> = shared
        .iter()
        .map(|(key, _)| remote.as_ref().and_then(|r| r.data.get(*key)).cloned())
        .collect();
    let complete = from_cluster.iter().all(Option::is_some);
    if !complete && !holder {
        return Ok(None);
    }
    for ((_, path), value) in shared.iter().zip(&from_cluster) {
        if let Some(p) = value
            && store_password(root, path, p)?
        {
            tracing::info!(path = %path, "stored the cluster's password locally");
        }
    }
    let (local, _) = crate::bundle::secrets::load(root, cfg, true)?;
    if !complete {
        // Publish what the cluster lacks, keeping what it has.
        let mut data: BTreeMap<String, String> =
            remote.as_ref().map(|r| r.data.clone()).unwrap_or_default();
        data.insert(
            shared[0].0.to_string(),
            local.grafana_admin_password.clone(),
        );
        data.insert(
            shared[1].0.to_string(),
            local.uptime_kuma_admin_password.clone(),
        );
        match configmap::put(api, Kind::Secret, CLUSTER_SECRET, &data, remote.as_ref()).await {
            Ok(_) => tracing::info!("published the generated credentials for the cluster"),
            // Another holder published first (the Lease changed hands
            // mid-pass): theirs stands, ours is dropped.
            Err(e) if e.is_conflict() => {
                let remote = Remote::Read(configmap::get(api, Kind::Secret, CLUSTER_SECRET).await?);
                return Box::pin(cluster_secrets(api, root, cfg, false, remote, memory)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    memory.set_secrets(local_digest(root, cfg));
    Ok(Some(local))
}
