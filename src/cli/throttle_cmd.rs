//! `sightline collect-throttle`.

use std::path::Path;

use anyhow::{Context, Result};

use super::out;
use crate::agent::Ctx;
use crate::facts::Facts;
use crate::sysroot::Sysroot;

/// Runs `collect-throttle`: no network, no D-Bus, one sysfs read (no fork on
/// a Pi with get_throttled in sysfs). `--output FILE` is taken as given and
/// `-` prints; without it, `[throttle] output` is a host path under --root
/// (the same rule as `render --out`).
pub fn run(ctx: &Ctx, output: Option<&str>) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let source = Facts::detect_throttle_source(&ctx.root);
    let sample = crate::throttle::collect(&ctx.root, &source)?;
    let text = crate::throttle::render(&sample);
    match output {
        Some("-") => out::out!("{text}"),
        Some(file) => {
            // The throttle writer maps a host path under a sysroot; an
            // explicit path is already real, so its sysroot is `/`.
            let abs = std::path::absolute(Path::new(file))
                .with_context(|| format!("resolving --output {file}"))?;
            crate::throttle::write(&Sysroot::new("/"), &abs.to_string_lossy(), &text)?;
        }
        None => crate::throttle::write(&ctx.root, &cfg.config.throttle.output, &text)?,
    }
    Ok(0)
}
