//! `sightline render` and `sightline bundle`.

use super::out;
use std::path::Path;

use anyhow::{Context, Result};

use crate::agent::Ctx;
use crate::bundle::Bundle;
use crate::decide::Tier;

/// `sightline render`. A review command: it writes no host state. The
/// Grafana and Uptime Kuma admin passwords come from the store when `apply`
/// already made them, and are otherwise one-offs that are not kept; the
/// notes say which.
pub fn run(ctx: &Ctx, json: bool, tier: Option<Tier>, out: Option<&Path>) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let (facts, cfg) = crate::agent::observe_blocking(ctx, &cfg)?;
    let mut sources = serde_json::Map::new();
    for (what, key, path) in [
        (
            "Grafana admin password",
            "grafana_admin_password",
            crate::bundle::secrets::grafana_password_path(&cfg.config),
        ),
        (
            "Uptime Kuma admin password",
            "uptime_kuma_admin_password",
            crate::bundle::secrets::uptime_kuma_password_path(&cfg.config),
        ),
    ] {
        // The store is root's (0600): say which file, and what to do,
        // rather than a bare "Permission denied (os error 13)".
        let stored = match ctx.root.read(&path) {
            Ok(v) => v.is_some_and(|v| !v.trim_ascii().is_empty()),
            Err(e) => anyhow::bail!(
                "reading the stored {what} {path}: {e}; it is readable by root only, so run `sudo sightline render`"
            ),
        };
        if stored {
            eprintln!("note: the rendered Secret holds the {what} stored in {path}");
        } else {
            eprintln!(
                "note: no {what} is stored in {path} yet; the rendered Secret holds a one-off password that is not kept (`sightline apply` generates and stores the real one)"
            );
        }
        sources.insert(key.into(), if stored { "stored" } else { "one_off" }.into());
    }
    let (stages, bundle, _, source) = crate::agent::runtime()?
        .block_on(crate::agent::review_stages(&ctx.root, &cfg, &facts, tier))?;
    if !json && let Some(line) = source.line() {
        eprintln!("note: {line}");
    }
    let dir = out.filter(|d| *d != Path::new("-"));
    let mut written = Vec::new();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for s in &stages {
            let mode = if s.sensitive { 0o600 } else { 0o644 };
            let path = dir.join(&s.file_name);
            crate::atomic::write_atomic(&path, &s.content, mode)
                .with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    if json {
        let files: Vec<_> = stages
            .iter()
            .map(|s| {
                serde_json::json!({
                    "file": s.file_name,
                    "stage": s.stage.name,
                    "sensitive": s.sensitive,
                    "written_to": dir.map(|d| d.join(&s.file_name)),
                    // The content only when it is not written to files.
                    "content": dir.is_none().then(|| String::from_utf8_lossy(&s.content)),
                })
            })
            .collect();
        super::print_json(&serde_json::json!({
            "bundle": { "digest": bundle.digest, "source": bundle.source.to_string() },
            "grafana_admin_password": sources["grafana_admin_password"],
            "uptime_kuma_admin_password": sources["uptime_kuma_admin_password"],
            "stages": files,
            "cluster_source": source.name(),
            "cluster_unavailable": source.unavailable(),
        }))?;
        return Ok(0);
    }
    match dir {
        Some(dir) => {
            for (s, path) in stages.iter().zip(&written) {
                out::outln!(
                    "{}{}",
                    path.display(),
                    if s.sensitive {
                        " (holds Secrets, mode 0600)"
                    } else {
                        ""
                    }
                );
            }
            eprintln!(
                "{} stage file(s) from bundle {} ({}) in {}",
                stages.len(),
                &bundle.digest[..12],
                bundle.source,
                dir.display()
            );
        }
        None => {
            eprintln!("note: the output includes Secret data (base64)");
            for s in &stages {
                out::outln!("# ===== {} =====", s.file_name);
                out::out!("{}", String::from_utf8_lossy(&s.content));
            }
        }
    }
    Ok(0)
}

/// `sightline bundle export --out DIR`: the embedded bundle as a file, for packaging.
pub fn export(out: &Path, json: bool) -> Result<u8> {
    let b = Bundle::embedded()?;
    if out == Path::new("-") {
        // The archive itself is the output; nothing else goes to stdout.
        std::io::Write::write_all(&mut std::io::stdout(), crate::bundle::archive::EMBEDDED)
            .unwrap_or_else(|e| out::failed(&e));
        return Ok(0);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tar = out.join("bundle.tar");
    crate::atomic::write_atomic(&tar, crate::bundle::archive::EMBEDDED, 0o644)
        .with_context(|| format!("writing {}", tar.display()))?;
    let digest = crate::digest::sha256_hex(crate::bundle::archive::EMBEDDED);
    let sum = out.join("bundle.tar.sha256");
    crate::atomic::write_atomic(&sum, format!("{digest}  bundle.tar\n").as_bytes(), 0o644)
        .with_context(|| format!("writing {}", sum.display()))?;
    if json {
        super::print_json(&serde_json::json!({ "file": tar, "digest": b.digest }))?;
    } else {
        out::outln!("{} (SHA256SUMS digest {})", tar.display(), b.digest);
    }
    Ok(0)
}

/// `sightline bundle verify FILE`.
pub fn verify(file: &Path, json: bool) -> Result<u8> {
    let b = crate::bundle::archive::verify_file(file)?;
    let idx = b.index()?;
    if json {
        super::print_json(&serde_json::json!({
            "file": file,
            "ok": true,
            "files": b.paths().count(),
            "stages": idx.stages.len(),
            "pinned_charts": idx.charts.len(),
            "digest": b.digest,
        }))?;
        return Ok(0);
    }
    out::outln!(
        "{}: ok — {} files, {} stages, {} pinned charts, SHA256SUMS digest {}",
        file.display(),
        b.paths().count(),
        idx.stages.len(),
        idx.charts.len(),
        b.digest
    );
    Ok(0)
}
