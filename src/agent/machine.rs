//! The machine as one run sees it: the facts, with systemd's own view of
//! the k3s units when a bus is reachable, and the configuration following
//! the k3s that was found (its unit name, the drop-in directory it reads).

use tracing::debug;

use super::Ctx;
use crate::config::LoadedConfig;
use crate::facts::{Facts, UNIT_PATTERNS};
use crate::systemd::SystemdClient;

/// Facts and the configuration that follows them. Without a bus (a
/// `--root` fixture, or systemd not answering) the unit files are searched
/// as systemd would.
pub async fn observe(ctx: &Ctx, cfg: &LoadedConfig) -> (Facts, LoadedConfig) {
    let units = if ctx.root.is_host() || ctx.system_bus.is_some() {
        match SystemdClient::connect(ctx.system_bus.as_deref()).await {
            Ok(c) => c
                .unit_infos(&UNIT_PATTERNS)
                .await
                .inspect_err(|e| debug!(error = %format!("{e:#}"), "listing k3s units over D-Bus; searching unit files instead"))
                .ok(),
            Err(e) => {
                debug!(error = %format!("{e:#}"), "no D-Bus; searching unit files instead");
                None
            }
        }
    } else {
        None
    };
    let facts = Facts::detect_with_units(&ctx.root, units.as_deref());
    let mut cfg = cfg.clone();
    cfg.follow_k3s(&facts.k3s);
    (facts, cfg)
}

/// [`observe`] outside a runtime, for the read-only commands.
pub fn observe_blocking(ctx: &Ctx, cfg: &LoadedConfig) -> anyhow::Result<(Facts, LoadedConfig)> {
    Ok(super::runtime()?.block_on(observe(ctx, cfg)))
}
