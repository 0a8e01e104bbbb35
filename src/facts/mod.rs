//! What the machine is, read entirely under the sysroot so a test can fake
//! any machine: memory, CPU, board, OS, k3s role, CNI, BTF, watchdog,
//! throttle source and GPU.

mod board;
mod cgroup;
mod cni;
mod cpu;
mod gpu;
mod k3s;
mod k3s_config;
mod k3s_manifests;
mod memory;
mod node_name;
mod os;
mod throttle;
mod unit_settings;
mod units;
mod watchdog;

use serde::Serialize;

pub use board::Board;
pub use cgroup::{CgroupCheck, Hierarchy as CgroupHierarchy};
pub use cni::Cni;
pub use cpu::Cpu;
pub use gpu::Gpu;
pub use k3s::{K3s, K3sRole, RoleSource, UNIT_PATTERNS, UnitSource};
pub use k3s_config::{
    ConfigSource, DEFAULT_CONFIG as K3S_DEFAULT_CONFIG, K3sConfigFiles, dotd_files as k3s_dropins,
};
pub use k3s_manifests::{ManifestRules, SkipReason, SkippedStage};
pub use memory::Memory;
pub use node_name::{NodeName, NodeNameSource, hostname};
pub use os::{Os, OsFamily};
pub use throttle::{ThrottleSource, find_vcgencmd};

/// The name k3s registers this machine under, from its unit files and
/// config (for callers without [`Facts`] at hand).
pub fn k3s_node_name(root: &Sysroot) -> NodeName {
    k3s::detect(root, None).node_name
}

/// Host path of the firmware throttle word.
pub fn throttle_sysfs() -> &'static str {
    throttle::GET_THROTTLED
}
pub use watchdog::Watchdog;

use crate::sysroot::Sysroot;
use crate::systemd::UnitInfo;

/// Everything sightline knows about a machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// `/proc/meminfo`.
    pub memory: Memory,
    /// Logical CPUs.
    pub cpus: usize,
    /// Kernel architecture name, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// CPU details.
    pub cpu: Cpu,
    /// Board model string, e.g. "Raspberry Pi 4 Model B Rev 1.5".
    pub board: Option<String>,
    /// Board classification.
    pub board_kind: Board,
    /// Operating system.
    pub os: Os,
    /// k3s installation.
    pub k3s: K3s,
    /// The CNI plugin configured for k3s.
    pub cni: Cni,
    /// Kernel BTF available (`/sys/kernel/btf/vmlinux`).
    pub btf: bool,
    /// The first hardware watchdog, if any.
    pub watchdog: Option<Watchdog>,
    /// Where throttle state can be read on a Raspberry Pi.
    pub throttle_source: ThrottleSource,
    /// An accelerator, if any.
    pub gpu: Option<Gpu>,
    /// The cgroup controllers k3s needs (the memory cgroup on a Pi).
    pub cgroups: CgroupCheck,
}

impl Facts {
    /// Reads every fact under `root`, finding k3s from its unit files.
    pub fn detect(root: &Sysroot) -> Facts {
        Facts::detect_with_units(root, None)
    }

    /// Reads every fact under `root`; `k3s_units` is what systemd reported
    /// over D-Bus for the units matching [`UNIT_PATTERNS`], when a bus is
    /// there (`SystemdClient::unit_infos`).
    pub fn detect_with_units(root: &Sysroot, k3s_units: Option<&[UnitInfo]>) -> Facts {
        let cpu = cpu::detect(root);
        let (board, board_kind) = board::detect(root);
        Facts {
            memory: memory::detect(root),
            cpus: cpu.logical_cpus,
            arch: cpu.arch.clone(),
            cpu,
            os: os::detect(root, board_kind),
            board,
            board_kind,
            k3s: k3s::detect(root, k3s_units),
            cni: cni::detect(root),
            btf: root.exists("/sys/kernel/btf/vmlinux"),
            watchdog: watchdog::detect(root),
            throttle_source: throttle::detect(root),
            gpu: gpu::detect(root),
            cgroups: cgroup::detect(root),
        }
    }

    /// Only the throttle source: what `collect-throttle` needs, without the
    /// cost of a full detection on every timer tick.
    pub fn detect_throttle_source(root: &Sysroot) -> ThrottleSource {
        throttle::detect(root)
    }

    /// True on a Raspberry Pi board.
    pub fn is_raspberry_pi(&self) -> bool {
        matches!(self.board_kind, Board::RaspberryPi)
    }
}

/// Reads a small text file under the root, trimmed of whitespace and NULs.
pub(crate) fn read_trimmed(root: &Sysroot, host_path: &str) -> Option<String> {
    let bytes = root.read(host_path).ok().flatten()?;
    let s = String::from_utf8_lossy(&bytes);
    let t = s
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    (!t.is_empty()).then_some(t)
}
