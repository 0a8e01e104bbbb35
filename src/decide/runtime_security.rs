//! Tetragon, Falco (and which driver), or nothing.

use serde::{Deserialize, Serialize, Serializer};

use super::{Decision, Tier};
use crate::config::{LoadedConfig, RuntimeSecurityChoice};
use crate::facts::{Cni, Facts, OsFamily};

/// How Falco reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FalcoDriver {
    /// CO-RE eBPF probe built into Falco; needs kernel BTF.
    ModernEbpf,
    /// Kernel module built or downloaded at start; needs headers or a prebuilt module.
    Kmod,
    /// The chart's own choice on each node (falcoctl's driver loader tries
    /// modern eBPF, then the kernel module): for a cluster whose kernels
    /// differ, since one DaemonSet serves every node.
    Auto,
}

impl FalcoDriver {
    /// The falco chart's `driver.kind` value.
    pub fn chart_value(self) -> &'static str {
        match self {
            FalcoDriver::ModernEbpf => "modern_ebpf",
            FalcoDriver::Kmod => "kmod",
            FalcoDriver::Auto => "auto",
        }
    }
}

/// The runtime-security engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSecurity {
    /// Tetragon with TracingPolicies.
    Tetragon,
    /// Falco with a driver.
    Falco(FalcoDriver),
    /// Nothing.
    None,
}

impl RuntimeSecurity {
    /// `tetragon`, `falco` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeSecurity::Tetragon => "tetragon",
            RuntimeSecurity::Falco(_) => "falco",
            RuntimeSecurity::None => "none",
        }
    }

    /// The Falco driver, when Falco.
    pub fn falco_driver(self) -> Option<FalcoDriver> {
        match self {
            RuntimeSecurity::Falco(d) => Some(d),
            _ => None,
        }
    }
}

impl Serialize for RuntimeSecurity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Architectures Falco and Tetragon publish images for.
const SUPPORTED_ARCH: [&str; 2] = ["x86_64", "aarch64"];

/// The runtime-security engine for this machine and tier.
pub fn decide_runtime_security(
    cfg: &LoadedConfig,
    facts: &Facts,
    tier: Tier,
) -> Decision<RuntimeSecurity> {
    let origin = cfg.origin("runtime_security");
    let driver = falco_driver(facts);
    let btf_note = if facts.btf {
        "kernel BTF present (/sys/kernel/btf/vmlinux): Falco uses its modern eBPF driver, no kernel module"
    } else {
        "no kernel BTF: Falco needs its kernel-module driver (built from headers or downloaded at start)"
    };
    match cfg.config.runtime_security {
        RuntimeSecurityChoice::None => Decision {
            value: RuntimeSecurity::None,
            reasons: vec![format!(
                "disabled by runtime_security = \"none\" ({origin})"
            )],
            overridden: true,
        },
        RuntimeSecurityChoice::Falco => Decision {
            value: RuntimeSecurity::Falco(driver),
            reasons: vec![
                format!("forced by runtime_security = \"falco\" ({origin})"),
                btf_note.into(),
            ],
            overridden: true,
        },
        RuntimeSecurityChoice::Tetragon => {
            let mut reasons = vec![format!(
                "forced by runtime_security = \"tetragon\" ({origin})"
            )];
            if facts.cni != Cni::Cilium {
                reasons.push("warning: the CNI is not Cilium; Tetragon runs, but Cilium's shared eBPF path is missing".into());
            }
            if !facts.btf {
                reasons
                    .push("warning: no kernel BTF; Tetragon needs BTF and will not start".into());
            }
            Decision {
                value: RuntimeSecurity::Tetragon,
                reasons,
                overridden: true,
            }
        }
        RuntimeSecurityChoice::Auto => {
            if !SUPPORTED_ARCH.contains(&facts.arch.as_str()) {
                return Decision {
                    value: RuntimeSecurity::None,
                    reasons: vec![format!(
                        "architecture {} has no Falco or Tetragon images (only x86_64 and aarch64); use a 64-bit OS",
                        facts.arch
                    )],
                    overridden: false,
                };
            }
            if facts.cni == Cni::Cilium && tier == Tier::Full && facts.btf {
                return Decision {
                    value: RuntimeSecurity::Tetragon,
                    reasons: vec![
                        "CNI is Cilium, tier is full and the kernel has BTF: Tetragon shares Cilium's eBPF path and can SIGKILL in-kernel".into(),
                    ],
                    overridden: false,
                };
            }
            if !facts.btf && facts.os.family == OsFamily::Flatcar {
                return Decision {
                    value: RuntimeSecurity::None,
                    reasons: vec![
                        "Flatcar without kernel BTF: no eBPF driver, and no kernel module can be built on a read-only /usr; set runtime_security to force one".into(),
                    ],
                    overridden: false,
                };
            }
            let mut why_not = Vec::new();
            if facts.cni != Cni::Cilium {
                why_not.push("the CNI is not Cilium");
            }
            if tier != Tier::Full {
                why_not.push("the tier is light (run exactly one eBPF agent on a small node)");
            }
            if !facts.btf {
                why_not.push("the kernel has no BTF");
            }
            Decision {
                value: RuntimeSecurity::Falco(driver),
                reasons: vec![
                    format!("Falco rather than Tetragon: {}", why_not.join(", ")),
                    btf_note.into(),
                ],
                overridden: false,
            }
        }
    }
}

fn falco_driver(facts: &Facts) -> FalcoDriver {
    if facts.btf {
        FalcoDriver::ModernEbpf
    } else {
        FalcoDriver::Kmod
    }
}
