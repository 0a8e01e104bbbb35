//! Credentials generated once for the cluster, shared through the Secret
//! `kube-system/sightline-cluster-secrets`.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::bundle::secrets::{Secrets, grafana_password_path, store_grafana_password};
use crate::config::Config;
use crate::k3s::K3sApi;
use crate::k3s::configmap::{self, CLUSTER_SECRET, Kind};
use crate::sysroot::Sysroot;

/// The key of the Grafana admin password in the cluster Secret.
const GRAFANA_KEY: &str = "grafana-admin-password";

/// The credentials for the cluster: the holder publishes its own (made
/// once, kept locally) unless the cluster has them already; a follower
/// takes the cluster's. Either keeps the cluster's copy locally, 0600.
/// None: a follower before the holder published them.
pub(super) async fn cluster_secrets(
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
