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

/// The shortest watchdog sightline arms. A hardware maximum of 0, 1 or 2 s
/// once gave `RuntimeWatchdogSec=1s`, and with it a hard reset on any slow
/// shutdown; below this, not arming is the safer failure.
pub const FLOOR_S: u32 = 5;

/// Why the watchdog is left unarmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The hardware (or the config) allows less than [`FLOOR_S`].
    BelowFloor {
        /// The timeout the hardware would force.
        seconds: u32,
    },
}

/// Clamps a requested timeout strictly below the hardware maximum: the
/// BCM2835 accepts at most 15 s and systemd silently runs without a watchdog
/// when asked for more, so a Pi gets 14 s. Below [`FLOOR_S`] it refuses.
pub fn clamp(requested: u32, max: Option<u32>) -> Result<u32, Refusal> {
    let s = match max {
        Some(m) => requested.min(m.saturating_sub(1)),
        None => requested,
    };
    if s < FLOOR_S {
        return Err(Refusal::BelowFloor { seconds: s });
    }
    Ok(s)
}

/// The clamped values for a device.
pub fn plan(cfg: &Config, wd: &Watchdog) -> Result<WatchdogPlan, Refusal> {
    Ok(WatchdogPlan {
        runtime_s: clamp(cfg.watchdog.timeout_seconds, wd.max_timeout_s)?,
        reboot_s: clamp(cfg.watchdog.reboot_timeout_seconds, wd.max_timeout_s)?,
    })
}

/// A value read from the host, made safe for a one-line comment: a driver
/// identity with a newline once injected `[Manager]` lines into the drop-in.
/// Control characters are written as escapes; the length is bounded.
pub fn comment_safe(s: &str) -> String {
    s.chars()
        .take(128)
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
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
    let p = match plan(cfg, wd) {
        Ok(p) => p,
        Err(Refusal::BelowFloor { seconds }) => {
            let why = format!(
                "{} allows at most {seconds} s, below the {FLOOR_S} s floor: not arming it",
                wd.device
            );
            tracing::warn!(device = %wd.device, max_timeout_s = ?wd.max_timeout_s, seconds, floor_s = FLOOR_S, "hardware watchdog too short; not arming it");
            d.skipped.push((Component::Watchdog, why));
            return;
        }
    };
    let mut s = managed_header("#");
    s.push_str(&format!(
        "# Device {} ({}), hardware maximum {}.\n",
        wd.device,
        comment_safe(wd.identity.as_deref().unwrap_or("unknown driver")),
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
        assert_eq!(clamp(30, Some(15)), Ok(14));
        assert_eq!(clamp(10, Some(15)), Ok(10));
        assert_eq!(clamp(30, None), Ok(30));
        assert_eq!(clamp(600, Some(613)), Ok(600));
    }

    #[test]
    fn refuses_below_the_floor() {
        for max in [1, 2, 3, 5] {
            assert!(clamp(30, Some(max)).is_err(), "max {max}");
        }
        assert_eq!(clamp(30, Some(6)), Ok(5));
        assert_eq!(clamp(3, None), Err(Refusal::BelowFloor { seconds: 3 }));
    }

    #[test]
    fn host_values_cannot_add_lines() {
        let s = comment_safe("bcm\n[Manager]\nRuntimeWatchdogSec=1s\r\0");
        assert!(
            !s.contains('\n') && !s.contains('\r') && !s.contains('\0'),
            "{s}"
        );
        assert!(s.contains("\\n[Manager]"), "{s}");
    }
}
