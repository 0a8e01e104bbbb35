//! The Raspberry Pi throttle collector's timer settings.

use super::{Component, DesiredDir, DesiredFile, DesiredState, Requirement, managed_header};
use crate::config::Config;
use crate::effects::Effect;
use crate::facts::{Facts, ThrottleSource};
use crate::sysroot::Sysroot;

/// The timer that runs `sightline collect-throttle`.
pub const TIMER: &str = "sightline-throttle.timer";

/// Where package managers and sysexts put unit files.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// True when the timer unit file is installed under the root.
pub fn timer_installed(root: &Sysroot) -> bool {
    UNIT_DIRS
        .iter()
        .any(|d| root.resolve(format!("{d}/{TIMER}")).is_file())
}

/// The symlink `systemctl enable` creates for a timer (its
/// `WantedBy=timers.target`).
pub fn wants_link(timer: &str) -> String {
    format!("/etc/systemd/system/timers.target.wants/{timer}")
}

pub(super) fn contribute(root: &Sysroot, cfg: &Config, facts: &Facts, d: &mut DesiredState) {
    if !cfg.throttle.enabled {
        d.skipped.push((
            Component::Throttle,
            "disabled by throttle.enabled = false".into(),
        ));
        return;
    }
    if facts.throttle_source == ThrottleSource::None {
        d.skipped.push((
            Component::Throttle,
            "no throttle source (get_throttled in sysfs or vcgencmd): not a Raspberry Pi".into(),
        ));
        return;
    }
    // The collector's sandbox may only write its textfile directory; state
    // it in a drop-in so a configured [throttle] output keeps working.
    let out_dir = std::path::Path::new(&cfg.throttle.output)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    d.dirs.push(DesiredDir {
        path: out_dir.clone(),
        mode: 0o755,
        component: Component::Throttle,
    });
    let mut svc = managed_header("#");
    svc.push_str(&format!("[Service]\nReadWritePaths={out_dir}\n"));
    d.files.push(DesiredFile {
        path: cfg.paths.throttle_service_dropin.clone(),
        content: svc.into_bytes(),
        mode: 0o644,
        component: Component::Throttle,
        effects: vec![Effect::DaemonReload],
    });
    let mut s = managed_header("#");
    s.push_str("[Timer]\n");
    // An empty assignment clears the packaged interval before setting ours.
    s.push_str("OnUnitActiveSec=\n");
    s.push_str(&format!(
        "OnUnitActiveSec={}s\n",
        cfg.throttle.interval_seconds
    ));
    let installed = timer_installed(root);
    let mut effects = vec![Effect::DaemonReload];
    if installed {
        // Restarting the timer makes a changed interval count from now.
        effects.push(Effect::EnableTimer { unit: TIMER.into() });
    }
    d.files.push(DesiredFile {
        path: cfg.paths.throttle_timer_dropin.clone(),
        content: s.into_bytes(),
        mode: 0o644,
        component: Component::Throttle,
        effects,
    });
    if installed {
        d.requirements
            .push(Requirement::TimerEnabled { unit: TIMER.into() });
    } else {
        d.warnings.push(format!(
            "{TIMER} is not installed (install the sightline package); until then run `sightline collect-throttle` by hand"
        ));
    }
}
