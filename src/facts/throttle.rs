//! Where a Raspberry Pi's throttle state can be read.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// The firmware's throttle word, exposed by the raspberrypi-hwmon/firmware driver.
pub const GET_THROTTLED: &str = "/sys/devices/platform/soc/soc:firmware/get_throttled";

/// Directories searched for vcgencmd when `PATH` is not set.
const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/vc/bin";

/// Throttle source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleSource {
    /// Read the sysfs file; no fork needed.
    Sysfs,
    /// Run vcgencmd at this host path.
    Vcgencmd(String),
    /// Not a Raspberry Pi, or no way to read it.
    None,
}

impl ThrottleSource {
    /// `sysfs`, `vcgencmd` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            ThrottleSource::Sysfs => "sysfs",
            ThrottleSource::Vcgencmd(_) => "vcgencmd",
            ThrottleSource::None => "none",
        }
    }
}

pub(super) fn detect(root: &Sysroot) -> ThrottleSource {
    if root.resolve(GET_THROTTLED).is_file() {
        return ThrottleSource::Sysfs;
    }
    match find_vcgencmd(root) {
        Some(p) => ThrottleSource::Vcgencmd(p),
        None => ThrottleSource::None,
    }
}

/// vcgencmd's host path, searched on PATH under the root.
pub fn find_vcgencmd(root: &Sysroot) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    path.split(':')
        .chain(["/opt/vc/bin"])
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/vcgencmd", d.trim_end_matches('/')))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(root.resolve(p))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// Images link their tools absolutely; the link is followed inside the
    /// image, not on the machine preparing it.
    #[test]
    fn an_absolute_link_to_vcgencmd_is_followed_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        let real = root.root().join("opt/vc/bin/vcgencmd");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(root.root().join("usr/bin")).unwrap();
        symlink("/opt/vc/bin/vcgencmd", root.root().join("usr/bin/vcgencmd")).unwrap();
        let found = find_vcgencmd(&root).unwrap();
        assert!(
            found == "/usr/bin/vcgencmd"
                || !std::env::var("PATH")
                    .unwrap_or_default()
                    .contains("/usr/bin"),
            "{found}"
        );
    }
}
