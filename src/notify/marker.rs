//! The clean-stop marker and the boot facts read at start.
//!
//! On SIGTERM the daemon writes the current boot ID into the marker; on
//! start it reads and clears it. A previous boot during which the daemon ran
//! and that left no marker with its ID ended without a clean shutdown.

use anyhow::{Context, Result};

use super::store::Paths;
use crate::atomic::{remove_file, write_atomic};
use crate::config::Config;
use crate::sysroot::Sysroot;

/// The kernel's random ID of this boot.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// WDIOF_CARDRESET, "Card previously reset the CPU" (linux
/// include/uapi/linux/watchdog.h); `bootstatus` prints the flags in
/// decimal (drivers/watchdog/watchdog_dev.c, `bootstatus_show`).
const WDIOF_CARDRESET: u32 = 0x0020;
/// WDIOF_POWERUNDER, "Power bad/power fault".
const WDIOF_POWERUNDER: u32 = 0x0010;

/// This boot's ID, or `None` when /proc is not there (a fixture root).
pub fn boot_id(root: &Sysroot) -> Option<String> {
    root.read_to_string(BOOT_ID)
        .ok()
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// When this boot started (`btime` in /proc/stat), seconds since the epoch.
pub fn booted_at(root: &Sysroot) -> Option<u64> {
    root.read_to_string("/proc/stat")
        .ok()
        .flatten()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Writes the marker (on SIGTERM).
pub fn write_clean_stop(root: &Sysroot, cfg: &Config) -> Result<()> {
    let Some(id) = boot_id(root) else {
        return Ok(());
    };
    let p = Paths::new(cfg).clean_stop;
    write_atomic(&root.path(&p), format!("{id}\n").as_bytes(), 0o600)
        .with_context(|| format!("writing {p}"))
}

/// Reads and removes the marker (on start): the boot ID of the last clean stop.
pub fn take_clean_stop(root: &Sysroot, cfg: &Config) -> Result<Option<String>> {
    let p = Paths::new(cfg).clean_stop;
    let id = root
        .read_to_string(&p)
        .with_context(|| format!("reading {p}"))?
        .map(|s| s.trim().to_string());
    remove_file(&root.path(&p)).with_context(|| format!("removing {p}"))?;
    Ok(id)
}

/// What the first hardware watchdog says about the last reset, when it
/// reports one.
pub fn watchdog_reset(root: &Sysroot) -> Option<String> {
    let flags: u32 = root
        .read_to_string("/sys/class/watchdog/watchdog0/bootstatus")
        .ok()
        .flatten()?
        .trim()
        .parse()
        .ok()?;
    let mut what = Vec::new();
    if flags & WDIOF_CARDRESET != 0 {
        what.push("the watchdog reset the machine (a hang)");
    }
    if flags & WDIOF_POWERUNDER != 0 {
        what.push("the power was bad");
    }
    (!what.is_empty()).then(|| format!("{} (bootstatus {flags:#x})", what.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstatus_card_reset() {
        let d = tempfile::tempdir().unwrap();
        let r = Sysroot::new(d.path());
        assert_eq!(watchdog_reset(&r), None);
        let p = r.path("/sys/class/watchdog/watchdog0/bootstatus");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "32\n").unwrap();
        assert!(watchdog_reset(&r).unwrap().contains("hang"));
        std::fs::write(&p, "0\n").unwrap();
        assert_eq!(watchdog_reset(&r), None);
    }

    #[test]
    fn marker_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let r = Sysroot::new(d.path());
        let mut cfg = Config::default();
        cfg.paths.state_dir = "/var/lib/sightline".into();
        let id = r.path(BOOT_ID);
        std::fs::create_dir_all(id.parent().unwrap()).unwrap();
        std::fs::write(&id, "abc\n").unwrap();
        assert_eq!(take_clean_stop(&r, &cfg).unwrap(), None);
        write_clean_stop(&r, &cfg).unwrap();
        assert_eq!(take_clean_stop(&r, &cfg).unwrap().as_deref(), Some("abc"));
        assert_eq!(take_clean_stop(&r, &cfg).unwrap(), None);
    }
}
