//! The choices for a whole cluster, made once by the Lease holder from the
//! node objects, and stored in the ConfigMap `kube-system/sightline-cluster`
//! for every server to render from.
//!
//! A cluster of one node decides exactly as a single machine does (its
//! facts, its recorded tier), so a single server is unchanged. With more
//! nodes, the rules change where one node's view would be wrong for the
//! others: the tier follows the smallest node's allocatable memory, and
//! Falco's driver suits every node's kernel, because the stack's pods are
//! not pinned to nodes and its DaemonSets run on all of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Decision, Decisions, FULL_NEEDS_AVAILABLE, FalcoDriver, RecordedTier, RuntimeSecurity, Tier,
    decide_network_policies, decide_runtime_security, decide_tier, gib,
};
use crate::config::{LoadedConfig, TierChoice};
use crate::facts::Facts;
use crate::k3s::nodes::NodeInfo;

/// Architectures the bundle's images are published for, as Go names them
/// in `status.nodeInfo.architecture`.
const IMAGE_ARCHES: [&str; 2] = ["amd64", "arm64"];

/// What the cluster runs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDecision {
    /// The tier.
    pub tier: Tier,
    /// `tetragon`, `falco` or `none`.
    pub runtime_security: String,
    /// Falco's driver, when Falco.
    pub falco_driver: Option<FalcoDriver>,
    /// The static NetworkPolicies.
    pub network_policies: bool,
    /// The GPU stage.
    pub gpu: bool,
    /// Reasons per choice (`tier`, `runtime_security`, `network_policies`, `images`).
    pub reasons: BTreeMap<String, Vec<String>>,
    /// Choices the config forced.
    pub overridden: Vec<String>,
    /// The nodes it was decided from.
    pub nodes: Vec<NodeInfo>,
}

impl ClusterDecision {
    /// The runtime-security engine as rendering takes it.
    pub fn runtime(&self) -> RuntimeSecurity {
        match (self.runtime_security.as_str(), self.falco_driver) {
            ("tetragon", _) => RuntimeSecurity::Tetragon,
            ("falco", Some(d)) => RuntimeSecurity::Falco(d),
            ("falco", None) => RuntimeSecurity::Falco(FalcoDriver::Auto),
            _ => RuntimeSecurity::None,
        }
    }

    /// `falco (auto driver)`, `tetragon` or `none`.
    pub fn runtime_line(&self) -> String {
        match self.runtime() {
            RuntimeSecurity::Falco(d) => format!("falco ({} driver)", d.chart_value()),
            other => other.name().to_string(),
        }
    }

    /// One line: `light tier, falco (auto driver), NetworkPolicies on`.
    pub fn summary(&self) -> String {
        let rs = self.runtime_line();
        format!(
            "{} tier, {rs}, NetworkPolicies {}{}",
            self.tier,
            if self.network_policies { "on" } else { "off" },
            if self.gpu { ", GPU stage" } else { "" }
        )
    }
}

fn from_local(d: Decisions, facts: &Facts, nodes: &[NodeInfo]) -> ClusterDecision {
    let mut reasons = BTreeMap::new();
    let mut overridden = Vec::new();
    for (k, r, o) in [
        ("tier", &d.tier.reasons, d.tier.overridden),
        (
            "runtime_security",
            &d.runtime_security.reasons,
            d.runtime_security.overridden,
        ),
        (
            "network_policies",
            &d.network_policies.reasons,
            d.network_policies.overridden,
        ),
    ] {
        reasons.insert(k.to_string(), r.clone());
        if o {
            overridden.push(k.to_string());
        }
    }
    ClusterDecision {
        tier: d.tier.value,
        runtime_security: d.runtime_security.value.name().into(),
        falco_driver: d.runtime_security.value.falco_driver(),
        network_policies: d.network_policies.value,
        gpu: facts.gpu.is_some(),
        reasons,
        overridden,
        nodes: nodes.to_vec(),
    }
}

/// Decides for the cluster. `facts` are the deciding server's own;
/// `nodes` every node with the deciding server's BTF filled in.
pub fn decide_cluster(
    cfg: &LoadedConfig,
    facts: &Facts,
    recorded: Option<&RecordedTier>,
    nodes: &[NodeInfo],
) -> ClusterDecision {
    if nodes.len() <= 1 {
        return from_local(Decisions::make(cfg, facts, recorded), facts, nodes);
    }
    let tier = cluster_tier(cfg, facts, nodes);
    let runtime_security = cluster_runtime_security(cfg, facts, tier.value, nodes);
    let network_policies = decide_network_policies(cfg, facts);
    let mut d = from_local(
        Decisions {
            tier,
            runtime_security,
            network_policies,
        },
        facts,
        nodes,
    );
    d.gpu = facts.gpu.is_some() || nodes.iter().any(|n| n.gpus > 0);
    d.reasons.insert("images".into(), image_reasons(nodes));
    d
}

fn smallest(nodes: &[NodeInfo]) -> &NodeInfo {
    nodes
        .iter()
        .min_by_key(|n| n.allocatable_memory)
        .expect("at least two nodes")
}

fn cluster_tier(cfg: &LoadedConfig, facts: &Facts, nodes: &[NodeInfo]) -> Decision<Tier> {
    if cfg.config.tier != TierChoice::Auto {
        return decide_tier(cfg, facts, None);
    }
    let small = smallest(nodes);
    let full = small.allocatable_memory >= FULL_NEEDS_AVAILABLE;
    let mut reasons = vec![format!(
        "{} nodes; the smallest, {}, has {} allocatable {} {} needed by the full tier",
        nodes.len(),
        small.name,
        gib(small.allocatable_memory),
        if full { "≥" } else { "<" },
        gib(FULL_NEEDS_AVAILABLE)
    )];
    reasons.push(
        "sightline pins no pod to a node: the scheduler may put Prometheus and Loki on any node, and the DaemonSets run on all of them, so the smallest node decides".into(),
    );
    Decision {
        value: if full { Tier::Full } else { Tier::Light },
        reasons,
        overridden: false,
    }
}

fn go_arch_to_uname(a: &str) -> &str {
    match a {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "armv7l",
        other => other,
    }
}

fn cluster_runtime_security(
    cfg: &LoadedConfig,
    facts: &Facts,
    tier: Tier,
    nodes: &[NodeInfo],
) -> Decision<RuntimeSecurity> {
    let all_btf = nodes.iter().all(|n| n.btf == Some(true));
    let no_btf = nodes.iter().all(|n| n.btf == Some(false));
    // The existing per-machine rules, run on a machine that stands for the
    // whole cluster: BTF only if every kernel has it, and the first
    // architecture without images if there is one.
    let mut f = facts.clone();
    f.btf = all_btf;
    if let Some(odd) = nodes
        .iter()
        .find(|n| !IMAGE_ARCHES.contains(&n.arch.as_str()))
    {
        f.arch = go_arch_to_uname(&odd.arch).to_string();
    }
    let mut d = decide_runtime_security(cfg, &f, tier);
    if let RuntimeSecurity::Falco(_) = d.value {
        let name = |pred: &dyn Fn(&NodeInfo) -> bool| {
            let v: Vec<&str> = nodes
                .iter()
                .filter(|n| pred(n))
                .map(|n| n.name.as_str())
                .collect();
            v.join(", ")
        };
        let (driver, why) = if all_btf {
            (
                FalcoDriver::ModernEbpf,
                "every node's kernel has BTF: Falco's DaemonSet uses the modern eBPF driver on all of them".to_string(),
            )
        } else if no_btf {
            (
                FalcoDriver::Kmod,
                "no node's kernel has BTF: Falco's DaemonSet uses its kernel-module driver on all of them".to_string(),
            )
        } else {
            let with = name(&|n| n.btf == Some(true));
            let without = name(&|n| n.btf == Some(false));
            let unknown = name(&|n| n.btf.is_none());
            let mut why = format!(
                "the kernels differ (BTF on: {}; without: {}",
                if with.is_empty() { "none" } else { &with },
                if without.is_empty() { "none" } else { &without }
            );
            if !unknown.is_empty() {
                why.push_str(&format!(
                    "; unknown, agent nodes report no facts: {unknown}"
                ));
            }
            why.push_str("): one DaemonSet serves every node, so Falco uses the chart's automatic driver selection (driver.kind=auto: modern eBPF where the kernel supports it, the kernel module elsewhere)");
            (FalcoDriver::Auto, why)
        };
        d.value = RuntimeSecurity::Falco(driver);
        // Both Falco paths end with the BTF note of one kernel; replace it.
        d.reasons.pop();
        d.reasons.push(why);
    }
    d
}

fn image_reasons(nodes: &[NodeInfo]) -> Vec<String> {
    let mut arches: Vec<&str> = nodes.iter().map(|n| n.arch.as_str()).collect();
    arches.sort();
    arches.dedup();
    let odd: Vec<&str> = arches
        .iter()
        .copied()
        .filter(|a| !IMAGE_ARCHES.contains(a))
        .collect();
    if odd.is_empty() {
        vec![format!(
            "nodes are {}: the bundle's images are multi-arch (amd64 and arm64), so each node pulls its own",
            arches.join(" and ")
        )]
    } else {
        vec![format!(
            "warning: node architecture {} has no images in the bundle (amd64 and arm64 only); pods scheduled there fail to pull",
            odd.join(", ")
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::Sysroot;

    fn pi() -> (LoadedConfig, Facts) {
        let root = Sysroot::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/roots/pi4"
        ));
        (crate::config::load(&root).unwrap(), Facts::detect(&root))
    }

    fn node(name: &str, arch: &str, gib_: u64, btf: Option<bool>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            arch: arch.into(),
            allocatable_memory: gib_ << 30,
            os_image: String::new(),
            kernel: String::new(),
            server: true,
            btf,
            gpus: 0,
        }
    }

    #[test]
    fn the_falco_driver_suits_every_kernel() {
        let (cfg, facts) = pi();
        let driver = |nodes: &[NodeInfo]| decide_cluster(&cfg, &facts, None, nodes).falco_driver;
        let all = [
            node("a", "arm64", 8, Some(true)),
            node("b", "amd64", 16, Some(true)),
        ];
        assert_eq!(driver(&all), Some(FalcoDriver::ModernEbpf));
        let none = [
            node("a", "arm64", 8, Some(false)),
            node("b", "amd64", 16, Some(false)),
        ];
        assert_eq!(driver(&none), Some(FalcoDriver::Kmod));
        let mixed = [
            node("a", "arm64", 8, Some(false)),
            node("b", "amd64", 16, Some(true)),
        ];
        assert_eq!(driver(&mixed), Some(FalcoDriver::Auto));
        let unknown = [
            node("a", "arm64", 8, Some(true)),
            node("w", "arm64", 8, None),
        ];
        let d = decide_cluster(&cfg, &facts, None, &unknown);
        assert_eq!(d.falco_driver, Some(FalcoDriver::Auto));
        assert!(
            d.reasons["runtime_security"]
                .iter()
                .any(|r| r.contains("unknown, agent nodes report no facts: w"))
        );
    }

    #[test]
    fn the_smallest_node_decides_the_tier_and_a_config_override_wins() {
        let (mut cfg, facts) = pi();
        let big = [
            node("a", "amd64", 16, Some(true)),
            node("b", "amd64", 32, Some(true)),
        ];
        assert_eq!(decide_cluster(&cfg, &facts, None, &big).tier, Tier::Full);
        let mixed = [
            node("pi", "arm64", 4, Some(false)),
            node("b", "amd64", 32, Some(true)),
        ];
        let d = decide_cluster(&cfg, &facts, None, &mixed);
        assert_eq!(d.tier, Tier::Light);
        assert!(
            d.reasons["tier"][0].contains("the smallest, pi,"),
            "{:?}",
            d.reasons
        );
        cfg.config.tier = TierChoice::Full;
        let d = decide_cluster(&cfg, &facts, None, &mixed);
        assert_eq!(d.tier, Tier::Full);
        assert_eq!(d.overridden, vec!["tier".to_string()]);
    }

    #[test]
    fn an_architecture_without_images_gets_no_runtime_security_and_a_warning() {
        let (cfg, facts) = pi();
        let nodes = [
            node("a", "arm64", 8, Some(true)),
            node("old", "arm", 1, Some(false)),
        ];
        let d = decide_cluster(&cfg, &facts, None, &nodes);
        assert_eq!(d.runtime(), RuntimeSecurity::None);
        assert!(d.reasons["images"][0].starts_with("warning: node architecture arm"));
    }
}
