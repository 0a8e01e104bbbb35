//! `sightline collect-throttle`.

use anyhow::Result;

use crate::agent::Ctx;
use crate::facts::Facts;

/// Runs `collect-throttle`: no network, no D-Bus, one sysfs read (no fork on
/// a Pi with get_throttled in sysfs).
pub fn run(ctx: &Ctx, output: Option<&str>) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let source = Facts::detect_throttle_source(&ctx.root);
    let sample = crate::throttle::collect(&ctx.root, &source)?;
    let out = output.unwrap_or(&cfg.config.throttle.output);
    crate::throttle::write(&ctx.root, out, &crate::throttle::render(&sample))?;
    Ok(0)
}
