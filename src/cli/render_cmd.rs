//! `sightline render` and `sightline bundle`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::agent::Ctx;
use crate::agent::desired_stages;
use crate::bundle::Bundle;
use crate::decide::Tier;

/// `sightline render`.
pub fn run(ctx: &Ctx, tier: Option<Tier>, out: Option<&Path>) -> Result<u8> {
    let writable = !ctx.root.is_host() || nix::unistd::geteuid().is_root();
    let cfg = crate::config::load(&ctx.root)?;
    let (facts, cfg) = crate::agent::observe_blocking(ctx, &cfg)?;
    let (stages, bundle, ephemeral) = desired_stages(&ctx.root, &cfg, &facts, tier, writable)?;
    if ephemeral {
        eprintln!(
            "note: no Grafana admin password is stored yet and this user cannot store one; the rendered Secret holds a one-off password"
        );
    }
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for s in &stages {
                let mode = if s.sensitive { 0o600 } else { 0o644 };
                let file = dir.join(&s.file_name);
                crate::atomic::write_atomic(&file, &s.content, mode)
                    .with_context(|| format!("writing {}", file.display()))?;
                println!(
                    "{}{}",
                    dir.join(&s.file_name).display(),
                    if s.sensitive {
                        " (holds Secrets, mode 0600)"
                    } else {
                        ""
                    }
                );
            }
            eprintln!(
                "{} stage file(s) from bundle {} ({})",
                stages.len(),
                &bundle.digest[..12],
                bundle.source
            );
        }
        None => {
            eprintln!("note: the output includes Secret data (base64)");
            for s in &stages {
                println!("# ===== {} =====", s.file_name);
                print!("{}", String::from_utf8_lossy(&s.content));
            }
        }
    }
    Ok(0)
}

/// `sightline bundle export --out DIR`: the embedded bundle as a file, for packaging.
pub fn export(out: &Path) -> Result<u8> {
    let b = Bundle::embedded()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tar = out.join("bundle.tar");
    crate::atomic::write_atomic(&tar, crate::bundle::archive::EMBEDDED, 0o644)
        .with_context(|| format!("writing {}", tar.display()))?;
    let digest = crate::digest::sha256_hex(crate::bundle::archive::EMBEDDED);
    let sum = out.join("bundle.tar.sha256");
    crate::atomic::write_atomic(&sum, format!("{digest}  bundle.tar\n").as_bytes(), 0o644)
        .with_context(|| format!("writing {}", sum.display()))?;
    println!("{} (SHA256SUMS digest {})", tar.display(), b.digest);
    Ok(0)
}

/// `sightline bundle verify FILE`.
pub fn verify(file: &Path) -> Result<u8> {
    let b = crate::bundle::archive::verify_file(file)?;
    let idx = b.index()?;
    println!(
        "{}: ok — {} files, {} stages, {} pinned charts, SHA256SUMS digest {}",
        file.display(),
        b.paths().count(),
        idx.stages.len(),
        idx.charts.len(),
        b.digest
    );
    Ok(0)
}
