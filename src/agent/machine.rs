//! The machine as one run sees it: the facts, with systemd's own view of
//! the k3s units when a bus is reachable, and the configuration following
//! the k3s that was found (its unit name, the drop-in directory it reads).

use tracing::debug;

use super::Ctx;
use crate::config::LoadedConfig;
use crate::facts::{Facts, UNIT_PATTERNS};
use crate::systemd::SystemdClient;

/// Facts and the configuration that follows them. systemd is asked only
/// when it runs on the machine whose files are read (`--root /`): its
/// unit paths are paths of its own filesystem. Under another `--root` (a
/// fixture, an image being prepared), or when systemd does not answer, the
/// unit files are searched as systemd would, under the root; an explicit
/// `--system-bus` then only receives the effects.
pub async fn observe(ctx: &Ctx, cfg: &LoadedConfig) -> (Facts, LoadedConfig) {
    let (facts, cfg, _) = observe_keeping_bus(ctx, cfg).await;
    (facts, cfg)
}

/// [`observe`], handing back the connection to systemd it used, if any, so
/// that the converge after it asks over the same one: connecting costs a
/// round trip to the bus and its authentication.
pub async fn observe_keeping_bus(
    ctx: &Ctx,
    cfg: &LoadedConfig,
) -> (Facts, LoadedConfig, Option<SystemdClient>) {
    let (units, client) = if ctx.root.is_host() {
        match SystemdClient::connect(ctx.system_bus.as_deref()).await {
            // A connection that failed to answer is not handed on: the
            // converge connects afresh rather than inherit a broken one.
            Ok(c) => match c.unit_infos(&UNIT_PATTERNS).await {
                Ok(units) => (Some(units), Some(c)),
                Err(e) => {
                    debug!(error = %format!("{e:#}"), "listing k3s units over D-Bus; searching unit files instead");
                    (None, None)
                }
            },
            Err(e) => {
                debug!(error = %format!("{e:#}"), "no D-Bus; searching unit files instead");
                (None, None)
            }
        }
    } else {
        debug!(root = %ctx.root.root().display(), "not the running machine's root: searching the unit files under it");
        (None, None)
    };
    let facts = Facts::detect_with_units(&ctx.root, units.as_deref());
    let mut cfg = cfg.clone();
    cfg.follow_k3s(&facts.k3s);
    (facts, cfg, client)
}

/// [`observe`] outside a runtime, for the read-only commands.
pub fn observe_blocking(ctx: &Ctx, cfg: &LoadedConfig) -> anyhow::Result<(Facts, LoadedConfig)> {
    Ok(super::runtime()?.block_on(observe(ctx, cfg)))
}
