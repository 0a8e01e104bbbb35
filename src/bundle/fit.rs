//! Does the rendered stack fit this node's memory?
//!
//! The scheduler places a pod only where its requests fit beside the
//! requests already there; k3s itself is not a pod, so the scheduler does not
//! see the ~600 MiB a k3s server uses. A stack whose requests the node cannot
//! really hold either stays Pending (its stage gate then times out) or runs
//! the node into memory pressure and evictions. So sightline checks first:
//!
//!   MemTotal ≥ k3s server + kubelet eviction reserve + stack requests at peak
//!
//! where "at peak" is the steady requests plus the larger of the Jobs that may
//! run at once and the largest init container (see bundle::footprint). When it
//! does not hold, the optional stages in [`SHEDDABLE`] are left out one by one
//! (a documented smaller set); when even that does not fit, the cluster stages
//! are refused with the numbers.

use serde::Serialize;

use super::footprint::{Footprint, mib};
use crate::decide::{Decision, Tier};

/// Memory the k3s server process and its packaged components take beside the
/// stack (issue 15's estimate). Upstream's table
/// (docs.k3s.io/reference/resource-profiling) is not directly usable: its
/// "K3s server with a workload" minimum, 1588 M on a Pi 4B with k3s v1.26.5,
/// includes a Prometheus + Grafana stack and an example workload, which here
/// are the footprint being checked; its agent-only figure is 268 M. 600 MiB
/// sits between the two; a measured k3s.service cgroup on a Pi would refine it.
pub const K3S_SERVER_MEMORY: u64 = 600 << 20;

/// k3s's kubelet evicts pods below 100Mi available (kubelet default
/// --eviction-hard memory.available<100Mi, which k3s keeps).
pub const EVICTION_RESERVE: u64 = 100 << 20;

/// Stages left out, in this order, when the whole stack does not fit: the
/// vulnerability scanner (its operator plus a scan Job) and Uptime Kuma.
/// Neither feeds the alerts that wake someone (runtime security, audit log,
/// node health), and both can be added by hand on a bigger node.
pub const SHEDDABLE: [&str; 2] = ["trivy-operator", "uptime-kuma"];

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fit", rename_all = "snake_case")]
pub enum Fit {
    /// Everything fits.
    Fits,
    /// Fits without these stages.
    Reduced {
        /// Stages left out.
        omitted: Vec<String>,
    },
    /// Does not fit even reduced: no cluster stage is written.
    Refused,
}

/// What a node needs for a footprint.
pub fn needed(fp: &Footprint) -> u64 {
    K3S_SERVER_MEMORY + EVICTION_RESERVE + fp.peak_requests()
}

fn without(fp: &Footprint, omitted: &[String]) -> Footprint {
    Footprint {
        lines: fp
            .lines
            .iter()
            .filter(|l| !omitted.contains(&l.stage))
            .cloned()
            .collect(),
    }
}

/// Decides whether the stack of `tier` with footprint `fp` fits `total_bytes`.
pub fn decide_fit(total_bytes: u64, tier: Tier, fp: &Footprint) -> Decision<Fit> {
    let need = needed(fp);
    let head = format!(
        "the {tier} tier requests {} steady + {} at peak (Jobs / init); with k3s (~{}) and the kubelet's eviction reserve ({}) it needs {}; this node has {}",
        mib(fp.steady_requests()),
        mib(fp.peak_requests() - fp.steady_requests()),
        mib(K3S_SERVER_MEMORY),
        mib(EVICTION_RESERVE),
        mib(need),
        mib(total_bytes)
    );
    if total_bytes >= need {
        return Decision {
            value: Fit::Fits,
            reasons: vec![head],
            overridden: false,
        };
    }
    let mut omitted = Vec::new();
    for stage in SHEDDABLE {
        if !fp.lines.iter().any(|l| l.stage == stage) {
            continue;
        }
        omitted.push(stage.to_string());
        let reduced = without(fp, &omitted);
        if total_bytes >= needed(&reduced) {
            return Decision {
                reasons: vec![
                    head,
                    format!(
                        "warning: the stack is installed without {} (needs {} without them); see docs/stack.md",
                        omitted.join(" and "),
                        mib(needed(&reduced))
                    ),
                ],
                value: Fit::Reduced { omitted },
                overridden: false,
            };
        }
    }
    let smallest = needed(&without(fp, &omitted));
    Decision {
        value: Fit::Refused,
        reasons: vec![
            head,
            format!(
                "warning: cluster stages refused: even without {} the stack needs {}, more than the {} this node has; its pods would stay Pending. Use a node with more memory",
                SHEDDABLE.join(" and "),
                mib(smallest),
                mib(total_bytes)
            ),
        ],
        overridden: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::footprint::{Line, Phase};

    fn line(stage: &str, mib: u64) -> Line {
        Line {
            stage: stage.into(),
            container: format!("deployment/{stage}/c"),
            phase: Phase::Steady,
            copies: 1,
            request_bytes: mib << 20,
            limit_bytes: mib << 20,
        }
    }

    #[test]
    fn fits_reduces_then_refuses() {
        let fp = Footprint {
            lines: vec![
                line("loki", 500),
                line("trivy-operator", 200),
                line("uptime-kuma", 100),
            ],
        };
        // 700 + 800 = 1500 MiB needed in full.
        assert_eq!(decide_fit(1500 << 20, Tier::Light, &fp).value, Fit::Fits);
        assert_eq!(
            decide_fit(1300 << 20, Tier::Light, &fp).value,
            Fit::Reduced {
                omitted: vec!["trivy-operator".into()]
            }
        );
        assert_eq!(
            decide_fit(1200 << 20, Tier::Light, &fp).value,
            Fit::Reduced {
                omitted: vec!["trivy-operator".into(), "uptime-kuma".into()]
            }
        );
        let refused = decide_fit(1100 << 20, Tier::Light, &fp);
        assert_eq!(refused.value, Fit::Refused);
        assert!(
            refused.reasons[1].contains("1200 MiB"),
            "{:?}",
            refused.reasons
        );
    }
}
