//! Hardware watchdog devices from `/sys/class/watchdog`.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// A hardware watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watchdog {
    /// Device node, e.g. `/dev/watchdog0`.
    pub device: String,
    /// Driver identity, e.g. "Broadcom BCM2835 Watchdog timer".
    pub identity: Option<String>,
    /// Current timeout, seconds.
    pub timeout_s: Option<u32>,
    /// Longest timeout the hardware accepts, seconds.
    pub max_timeout_s: Option<u32>,
}

/// Drivers whose maximum is known when sysfs does not expose `max_timeout`.
/// systemd silently runs without a watchdog when asked for more than this.
const KNOWN_MAXIMA: [(&str, u32); 1] = [("Broadcom BCM2835 Watchdog timer", 15)];

pub(super) fn detect(root: &Sysroot) -> Option<Watchdog> {
    let rd = std::fs::read_dir(root.resolve("/sys/class/watchdog")).ok()?;
    // systemd arms /dev/watchdog0 unless told otherwise; take the lowest index.
    let mut indices: Vec<u32> = rd
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("watchdog")?
                .parse()
                .ok()
        })
        .collect();
    indices.sort_unstable();
    let n = *indices.first()?;
    let base = format!("/sys/class/watchdog/watchdog{n}");
    // 0 is what a driver reports when it does not know (and would give
    // RuntimeWatchdogSec=0, i.e. off, or worse after clamping): unknown.
    let read_u32 = |f: &str| {
        super::read_trimmed(root, &format!("{base}/{f}"))?
            .parse::<u32>()
            .ok()
            .filter(|&v| v > 0)
    };
    let identity = super::read_trimmed(root, &format!("{base}/identity"));
    let max_timeout_s = read_u32("max_timeout").or_else(|| {
        let id = identity.as_deref()?;
        KNOWN_MAXIMA
            .iter()
            .find(|(name, _)| *name == id)
            .map(|(_, m)| *m)
    });
    Some(Watchdog {
        device: format!("/dev/watchdog{n}"),
        identity,
        timeout_s: read_u32("timeout"),
        max_timeout_s,
    })
}
