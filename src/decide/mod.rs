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
}

impl Decisions {
    /// Decides everything for `facts` under `cfg`; `recorded` is the tier kept
    /// from an earlier automatic decision.
    pub fn make(cfg: &LoadedConfig, facts: &Facts, recorded: Option<&RecordedTier>) -> Decisions {
        let tier = decide_tier(cfg, facts, recorded);
        let runtime_security = decide_runtime_security(cfg, facts, tier.value);
        Decisions { tier, runtime_security }
    }
}

/// Formats a byte count in GiB with one decimal.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}
