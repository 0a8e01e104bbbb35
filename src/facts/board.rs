//! Board model from the device tree (ARM boards) or DMI (PCs and VMs).

use serde::Serialize;

use crate::sysroot::Sysroot;

/// Board classification used by the decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Board {
    /// Any Raspberry Pi.
    RaspberryPi,
    /// Anything else.
    Generic,
}

pub(super) fn detect(root: &Sysroot) -> (Option<String>, Board) {
    let model = super::read_trimmed(root, "/proc/device-tree/model")
        .or_else(|| super::read_trimmed(root, "/sys/firmware/devicetree/base/model"))
        .or_else(|| super::read_trimmed(root, "/sys/class/dmi/id/product_name"));
    let kind = match &model {
        Some(m) if m.starts_with("Raspberry Pi") => Board::RaspberryPi,
        _ => Board::Generic,
    };
    (model, kind)
}
