//! Accelerators that switch on extra exporters.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// A GPU found on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Vendor; only `nvidia` is detected.
    pub vendor: String,
    /// Number of devices the driver lists (at least 1).
    pub devices: usize,
}

pub(super) fn detect(root: &Sysroot) -> Option<Gpu> {
    let listed = std::fs::read_dir(root.resolve("/proc/driver/nvidia/gpus"))
        .map(|rd| rd.flatten().count())
        .unwrap_or(0);
    if listed > 0 || root.exists("/dev/nvidia0") {
        Some(Gpu {
            vendor: "nvidia".into(),
            devices: listed.max(1),
        })
    } else {
        None
    }
}
