//! Arming the hardware watchdog through systemd's manager settings.

use super::{Component, DesiredFile, DesiredState, managed_header};
use crate::config::Config;
use crate::effects::Effect;
use crate::facts::{Facts, Watchdog};

/// The watchdog values after clamping to the hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogPlan {
    /// RuntimeWatchdogSec.
    pub runtime_s: u32,
    /// RebootWatchdogSec.
    pub reboot_s: u32,
}

/// Clamps a requested timeout strictly below the hardware maximum: the
/// BCM2835 accepts at most 15 s and systemd silently runs without a watchdog
/// when asked for more, so a Pi gets 14 s.
pub fn clamp(requested: u32, max: Option<u32>) -> u32 {
    match max {
        Some(m) if m >= 2 => requested.min(m - 1),
        Some(_) => 1,
        None => requested,
    }
    .max(1)
}

/// The clamped values for a device.
pub fn plan(cfg: &Config, wd: &Watchdog) -> WatchdogPlan {
    WatchdogPlan {
        runtime_s: clamp(cfg.watchdog.timeout_seconds, wd.max_timeout_s),
        reboot_s: clamp(cfg.watchdog.reboot_timeout_seconds, wd.max_timeout_s),
    }
}

pub(super) fn contribute(cfg: &Config, facts: &Facts, d: &mut DesiredState) {
    if !cfg.watchdog.enabled {
        d.skipped.push((
            Component::Watchdog,
            "disabled by watchdog.enabled = false".into(),
        ));
        return;
    }
    let Some(wd) = &facts.watchdog else {
        d.skipped.push((
            Component::Watchdog,
            "no hardware watchdog under /sys/class/watchdog".into(),
        ));
        return;
    };
    let p = plan(cfg, wd);
    let mut s = managed_header("#");
    s.push_str(&format!(
        "# Device {} ({}), hardware maximum {}.\n",
        wd.device,
        wd.identity.as_deref().unwrap_or("unknown driver"),
        wd.max_timeout_s
            .map_or("unknown".to_string(), |m| format!("{m} s"))
    ));
    if p.runtime_s < cfg.watchdog.timeout_seconds {
        s.push_str(&format!(
            "# Requested {} s, clamped below the hardware maximum: systemd disables the watchdog when asked for more.\n",
            cfg.watchdog.timeout_seconds
        ));
    }
    s.push_str("[Manager]\n");
    s.push_str(&format!("RuntimeWatchdogSec={}s\n", p.runtime_s));
    s.push_str(&format!("RebootWatchdogSec={}s\n", p.reboot_s));
    if wd.device != "/dev/watchdog0" {
        s.push_str(&format!("WatchdogDevice={}\n", wd.device));
    }
    d.files.push(DesiredFile {
        path: cfg.paths.watchdog_dropin.clone(),
        content: s.into_bytes(),
        mode: 0o644,
        component: Component::Watchdog,
        effects: vec![Effect::ApplyWatchdog {
            runtime_usec: u64::from(p.runtime_s) * 1_000_000,
        }],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_below_maximum() {
        assert_eq!(clamp(30, Some(15)), 14);
        assert_eq!(clamp(10, Some(15)), 10);
        assert_eq!(clamp(30, None), 30);
        assert_eq!(clamp(30, Some(1)), 1);
        assert_eq!(clamp(600, Some(613)), 600);
    }
}
