//! full or light, from measured memory.
//!
//! The rule: the full tier peaks at about 4 GiB and wants 2 GiB of headroom,
//! so it needs 6 GiB *available*. Anything less gets the light tier, whose
//! steady requests stay within 1.2 GiB (computed from the rendered bundle by
//! `bundle::footprint`, checked by tests/footprint.rs); whether they fit this
//! node is `bundle::fit`'s question. Available memory, not
//! total, is what decides: an 8 GB box already running 6.5 GB of workloads
//! has no room for the full stack.
//!
//! An automatic decision is recorded and kept. Once the stack runs it uses
//! memory itself, so measuring again would flip the tier back and forth.

use serde::{Deserialize, Serialize};

use super::{Decision, gib};
use crate::config::{LoadedConfig, TierChoice};
use crate::facts::Facts;

/// Peak memory of the full tier.
pub const FULL_PEAK: u64 = 4 << 30;
/// Headroom the full tier wants on top of its peak.
pub const FULL_HEADROOM: u64 = 2 << 30;
/// Available memory the full tier needs.
pub const FULL_NEEDS_AVAILABLE: u64 = FULL_PEAK + FULL_HEADROOM;
/// The light tier's budget for steady memory requests (tests/footprint.rs
/// holds the rendered bundle to it).
pub const LIGHT_PEAK: u64 = 1229 << 20;

/// The stack tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// kube-prometheus-stack and friends.
    Full,
    /// VictoriaMetrics and friends, for a Pi.
    Light,
}

impl Tier {
    /// `full` or `light`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Full => "full",
            Tier::Light => "light",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An automatic tier decision kept in state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTier {
    /// The tier chosen.
    pub tier: Tier,
    /// When (RFC 3339, UTC).
    pub decided_at: String,
    /// MemAvailable at the time.
    pub available_bytes: u64,
}

/// The tier for this machine.
pub fn decide_tier(
    cfg: &LoadedConfig,
    facts: &Facts,
    recorded: Option<&RecordedTier>,
) -> Decision<Tier> {
    let measured = measure(facts);
    match cfg.config.tier {
        TierChoice::Full | TierChoice::Light => {
            let value = if cfg.config.tier == TierChoice::Full {
                Tier::Full
            } else {
                Tier::Light
            };
            let mut reasons = vec![format!(
                "forced by tier = \"{value}\" ({})",
                cfg.origin("tier")
            )];
            if value != measured.value {
                reasons.push(format!(
                    "measured memory alone would choose {}: {}",
                    measured.value, measured.reasons[0]
                ));
            }
            if value == Tier::Full && facts.memory.available_bytes < FULL_NEEDS_AVAILABLE {
                reasons.push(format!(
                    "warning: only {} available; the full tier peaks near {} and may push the node into OOM kills",
                    gib(facts.memory.available_bytes),
                    gib(FULL_PEAK)
                ));
            }
            Decision {
                value,
                reasons,
                overridden: true,
            }
        }
        TierChoice::Auto => match recorded {
            Some(r) => {
                let mut reasons = vec![format!(
                    "kept from the automatic decision of {} ({} available then); auto does not re-decide once the stack runs, because its own memory use would flip the tier",
                    r.decided_at,
                    gib(r.available_bytes)
                )];
                if measured.value != r.tier {
                    reasons.push(format!(
                        "measured now: {} (the stack itself uses memory); run `sightline apply --redecide` or set tier to change",
                        measured.reasons[0]
                    ));
                }
                Decision {
                    value: r.tier,
                    reasons,
                    overridden: false,
                }
            }
            None => measured,
        },
    }
}

fn measure(facts: &Facts) -> Decision<Tier> {
    let avail = facts.memory.available_bytes;
    let total = facts.memory.total_bytes;
    let mut reasons = Vec::new();
    let value = if avail >= FULL_NEEDS_AVAILABLE {
        reasons.push(format!(
            "{} available of {} ≥ {} needed by the full tier (peak ~{} + {} headroom)",
            gib(avail),
            gib(total),
            gib(FULL_NEEDS_AVAILABLE),
            gib(FULL_PEAK),
            gib(FULL_HEADROOM)
        ));
        Tier::Full
    } else {
        reasons.push(format!(
            "{} available of {} < {} needed by the full tier (peak ~{} + {} headroom): the light tier (its footprint is under `stack` in detect)",
            gib(avail),
            gib(total),
            gib(FULL_NEEDS_AVAILABLE),
            gib(FULL_PEAK),
            gib(FULL_HEADROOM)
        ));
        if avail < LIGHT_PEAK + (512 << 20) {
            reasons.push(format!(
                "warning: {} available leaves little room even for the light tier (budget {} of steady requests)",
                gib(avail),
                gib(LIGHT_PEAK)
            ));
        }
        Tier::Light
    };
    if let Some(board) = &facts.board
        && facts.is_raspberry_pi()
    {
        reasons.push(format!("board: {board}"));
    }
    Decision {
        value,
        reasons,
        overridden: false,
    }
}
