//! A follower: places exactly the Lease holder's stage files.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bundle::Bundle;
use crate::config::{Config, LoadedConfig};
use crate::digest::sha256_hex;
use crate::facts::Facts;
use crate::k3s::K3sApi;
use crate::k3s::configmap::CLUSTER_CONFIGMAP;
use crate::sysroot::Sysroot;

use super::record::{RECORD_KEY, Read, stage_files_on_disk};
use super::secrets::{self, cluster_secrets};
use super::{ClusterRole, ClusterView, Memory, render_cluster_stages, skewed};

/// A follower: renders from the cluster's decision and places exactly the
/// holder's files, or nothing when any of them differs.
pub(super) async fn follow(
    api: &K3sApi,
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    read: Option<&Read>,
    bundle: &Bundle,
    memory: &Memory,
) -> Result<ClusterView> {
    let me = &super::node_name(facts);
    // Both at once: a follower's pass costs one round trip more than its
    // Lease read, not two.
    let (_, remote) = tokio::join!(
        annotate_btf(api, me, facts.btf),
        secrets::fetch(api, root, &cfg.config, memory)
    );
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
    let Some(secrets) = cluster_secrets(api, root, &cfg.config, false, remote?, memory).await?
    else {
        view.detail =
            Some("the Lease holder has not published the cluster's credentials yet".into());
        return Ok(view);
    };
    let (stages, _) = render_cluster_stages(root, &cfg.config, facts, &rec.decision, &secrets)?;
    let mut differ = Vec::new();
    let mut place: Vec<Placed> = Vec::new();
    // A file already identical here stays, rendered or not: mid-switch the
    // holder still has files of the previous decision.
    let on_disk = stage_files_on_disk(root, &cfg.config)?;
    for (file, sha) in &rec.files {
        if on_disk.get(file) == Some(sha) {
            continue;
        }
        let rendered = stages.iter().find(|s| &s.file_name == file);
        match (rendered, rec.texts.get(file)) {
            (Some(s), _) if sha256_hex(&s.content) == *sha => place.push(Placed {
                file,
                content: &s.content,
                mode: if s.sensitive { 0o600 } else { 0o644 },
            }),
            (_, Some(t)) if sha256_hex(t.as_bytes()) == *sha => place.push(Placed {
                file,
                content: t.as_bytes(),
                mode: 0o644,
            }),
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

/// One of the holder's files, as this server places it.
struct Placed<'a> {
    file: &'a str,
    content: &'a [u8],
    mode: u32,
}

/// Places the holder's files and removes those it no longer has.
async fn mirror(
    root: &Sysroot,
    cfg: &Config,
    place: &[Placed<'_>],
    files: &BTreeMap<String, String>,
) -> Result<()> {
    let on_disk = stage_files_on_disk(root, cfg)?;
    let dir = &cfg.paths.manifests_dir;
    let stale: Vec<&String> = on_disk.keys().filter(|f| !files.contains_key(*f)).collect();
    let todo: Vec<&Placed> = place
        .iter()
        .filter(|p| on_disk.get(p.file) != files.get(p.file))
        .collect();
    if stale.is_empty() && todo.is_empty() {
        return Ok(());
    }
    let _lock =
        crate::lock::Lock::acquire(&root.path(cfg.lock_path()), Duration::from_secs(600)).await?;
    crate::atomic::create_dir_all(&root.path(dir), 0o755)
        .with_context(|| format!("creating {dir}"))?;
    for p in todo {
        let path = format!("{dir}/{}", p.file);
        crate::atomic::write_atomic(&root.path(&path), p.content, p.mode)
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
