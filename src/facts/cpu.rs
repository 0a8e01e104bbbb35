//! CPU count, model and architecture from `/proc/cpuinfo` and
//! `/proc/sys/kernel/arch`.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// CPU facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// Kernel architecture name.
    pub arch: String,
    /// Logical CPUs (processor entries).
    pub logical_cpus: usize,
    /// Model name, when the kernel reports one.
    pub model: Option<String>,
    /// Running under a hypervisor (the `hypervisor` CPU flag).
    pub virtualized: bool,
}

pub(super) fn detect(root: &Sysroot) -> Cpu {
    let info = root
        .read_to_string("/proc/cpuinfo")
        .ok()
        .flatten()
        .unwrap_or_default();
    let arch = super::read_trimmed(root, "/proc/sys/kernel/arch")
        .or_else(|| arch_from_cpuinfo(&info))
        .or_else(|| root.is_host().then(|| std::env::consts::ARCH.to_string()))
        .unwrap_or_else(|| "unknown".into());
    parse(&info, arch)
}

/// Builds CPU facts from cpuinfo text and a known architecture.
pub fn parse(info: &str, arch: String) -> Cpu {
    let value = |l: &str, key: &str| -> Option<String> {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let logical_cpus = info
        .lines()
        .filter(|l| value(l, "processor").is_some())
        .count()
        .max(1);
    // ARM kernels report no "model name", only the implementer's part number.
    let model = info
        .lines()
        .find_map(|l| value(l, "model name"))
        .or_else(|| {
            info.lines()
                .find_map(|l| value(l, "CPU part"))
                .and_then(|p| arm_core(&p).map(String::from))
        })
        .filter(|m| !m.is_empty());
    let virtualized = info
        .lines()
        .filter_map(|l| value(l, "flags"))
        .any(|f| f.split_whitespace().any(|x| x == "hypervisor"));
    Cpu {
        arch,
        logical_cpus,
        model,
        virtualized,
    }
}

/// Arm Ltd. core names by MIDR part number (the cores Raspberry Pis use, and their kin).
fn arm_core(part: &str) -> Option<&'static str> {
    Some(match part {
        "0xd03" => "Cortex-A53",
        "0xd04" => "Cortex-A35",
        "0xd05" => "Cortex-A55",
        "0xd07" => "Cortex-A57",
        "0xd08" => "Cortex-A72",
        "0xd09" => "Cortex-A73",
        "0xd0b" => "Cortex-A76",
        "0xd0c" => "Neoverse-N1",
        _ => return None,
    })
}

fn arch_from_cpuinfo(info: &str) -> Option<String> {
    if info.contains("GenuineIntel") || info.contains("AuthenticAMD") {
        return Some("x86_64".into());
    }
    let arm_arch = info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "CPU architecture").then(|| v.trim().to_string())
    })?;
    Some(if arm_arch == "8" {
        "aarch64".into()
    } else {
        "armv7l".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_model() {
        let c = parse(
            "processor\t: 0\nmodel name\t: Intel(R) N100\nflags\t\t: fpu hypervisor sse\n\nprocessor\t: 1\n",
            "x86_64".into(),
        );
        assert_eq!(c.logical_cpus, 2);
        assert_eq!(c.model.as_deref(), Some("Intel(R) N100"));
        assert!(c.virtualized);
    }

    #[test]
    fn arm_core_names() {
        let c = parse(
            "processor\t: 0\nCPU part\t: 0xd08\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.5\n",
            "aarch64".into(),
        );
        assert_eq!(c.model.as_deref(), Some("Cortex-A72"));
    }

    #[test]
    fn arm_arch_guess() {
        assert_eq!(
            arch_from_cpuinfo("CPU architecture: 8\n").as_deref(),
            Some("aarch64")
        );
        assert_eq!(
            arch_from_cpuinfo("CPU architecture: 7\n").as_deref(),
            Some("armv7l")
        );
    }
}
