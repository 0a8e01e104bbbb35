//! Last checks on the desired state against what only the facts know.
//!
//! The config check refuses k3s's default `config.yaml` as a managed file,
//! but k3s may read another one (`K3S_CONFIG_FILE`, `--config`), which only
//! discovery sees. Replacing it would wipe the node's k3s settings.

use super::DesiredState;
use crate::config::Config;
use crate::facts::Facts;
use crate::sysroot::normalize_host_path as normalize;

/// Refuses a desired state that would replace the config file k3s reads.
pub(super) fn check(cfg: &Config, facts: &Facts, d: &DesiredState) -> Result<(), String> {
    let k3s = &facts.k3s.config;
    let theirs = normalize(&k3s.file);
    for f in &d.files {
        if normalize(&f.path) == theirs {
            let key = setting_of(cfg, &f.path).unwrap_or("a path setting");
            return Err(format!(
                "{} is the config file k3s reads ({}); sightline never replaces it. \
                 Fix: set {key} in /etc/sightline/config.toml to a file of sightline's, \
                 e.g. a drop-in in {}; nothing was written",
                f.path, k3s.source, k3s.dropin_dir
            ));
        }
    }
    Ok(())
}

/// The `[paths]` key that names a host path.
fn setting_of<'a>(cfg: &Config, path: &str) -> Option<&'a str> {
    let p = &cfg.paths;
    [
        ("paths.audit_policy", &p.audit_policy),
        ("paths.k3s_audit_dropin", &p.k3s_audit_dropin),
        ("paths.watchdog_dropin", &p.watchdog_dropin),
        ("paths.throttle_timer_dropin", &p.throttle_timer_dropin),
        ("paths.throttle_service_dropin", &p.throttle_service_dropin),
    ]
    .into_iter()
    .find(|(_, v)| normalize(v) == normalize(path))
    .map(|(k, _)| k)
}
