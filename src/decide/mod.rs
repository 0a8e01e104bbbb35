//! The choices sightline makes from facts and config — each with the reasons
//! a user would need to agree or override it.

mod runtime_security;
mod tier;

use serde::Serialize;

pub use runtime_security::{FalcoDriver, RuntimeSecurity, decide_runtime_security};
pub use tier::{FULL_NEEDS_AVAILABLE, RecordedTier, Tier, decide_tier};

use crate::config::LoadedConfig;
use crate::facts::Facts;

/// A decided value and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision<T> {
    /// The chosen value.
    pub value: T,
    /// Human-readable reasons, most important first.
    pub reasons: Vec<String>,
    /// True when the config forced the value.
    pub overridden: bool,
}

/// Every decision for a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decisions {
    /// The stack tier.
    pub tier: Decision<Tier>,
    /// The runtime-security engine.
    pub runtime_security: Decision<RuntimeSecurity>,
    /// Whether the static NetworkPolicies are installed.
    pub network_policies: Decision<bool>,
}

impl Decisions {
    /// Decides everything for `facts` under `cfg`; `recorded` is the tier kept
    /// from an earlier automatic decision.
    pub fn make(cfg: &LoadedConfig, facts: &Facts, recorded: Option<&RecordedTier>) -> Decisions {
        let tier = decide_tier(cfg, facts, recorded);
        let runtime_security = decide_runtime_security(cfg, facts, tier.value);
        let network_policies = decide_network_policies(cfg, facts);
        Decisions {
            tier,
            runtime_security,
            network_policies,
        }
    }
}

/// Whether to install the static NetworkPolicies.
pub fn decide_network_policies(cfg: &LoadedConfig, facts: &Facts) -> Decision<bool> {
    use crate::config::NetworkPolicyChoice::*;
    let origin = cfg.origin("rollout.network_policies");
    match cfg.config.rollout.network_policies {
        On => Decision { value: true, reasons: vec![format!("forced by rollout.network_policies = \"on\" ({origin})")], overridden: true },
        Off => Decision { value: false, reasons: vec![format!("disabled by rollout.network_policies = \"off\" ({origin})")], overridden: true },
        Auto if facts.cni == crate::facts::Cni::Cilium => Decision {
            value: false,
            reasons: vec![
                "CNI is Cilium: its ipBlock rules do not match node addresses unless policy-cidr-match-mode=nodes, so the scrape and API rules would cut off node-exporter, the kubelet and the API server; set rollout.network_policies = \"on\" once Cilium is configured that way".into(),
            ],
            overridden: false,
        },
        Auto if facts.k3s.role == crate::facts::K3sRole::None => Decision {
            value: true,
            reasons: vec![
                "no k3s on this machine: when k3s comes with its default network policy controller (kube-router), every component gets its policies".into(),
            ],
            overridden: false,
        },
        Auto => Decision {
            value: true,
            reasons: vec![format!(
                "CNI is {}, and k3s's embedded network policy controller (kube-router) enforces NetworkPolicy; every component gets its policies",
                facts.cni.name()
            )],
            overridden: false,
        },
    }
}

/// Formats a byte count in GiB with one decimal.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}
