//! Credentials generated once for the cluster, shared through the Secret
//! `kube-system/sightline-cluster-secrets`.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::bundle::secrets::{Secrets, generated_passwords, store_password};
use crate::config::Config;
use crate::k3s::K3sApi;
use crate::k3s::configmap::{self, CLUSTER_SECRET, Kind};
use crate::sysroot::Sysroot;

/// The credentials for the cluster: the holder publishes its own (made
/// once, kept locally) unless the cluster has them already; a follower
/// takes the cluster's. Either keeps the cluster's copies locally, 0600.
/// None: a follower before the holder published them.
pub(super) async fn cluster_secrets(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &Config,
    holder: bool,
) -> Result<Option<Secrets>> {
    let remote = configmap::get(api, Kind::Secret, CLUSTER_SECRET).await?;
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
                return Box::pin(cluster_secrets(api, root, cfg, false)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(local))
}
