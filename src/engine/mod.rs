//! Converging the host: diff the desired state against the sysroot, write
//! what differs atomically, remember what sightline owns, and run the
//! follow-up effects.

pub(crate) mod apply;
pub mod converge;
pub mod intent;
pub mod journal;
pub mod k3s_start;
pub mod ops;
pub mod pacing;
pub(crate) mod plan;
pub(crate) mod restart;
pub mod uninstall;

/// The engine's points are the crate's; re-exported so `super::failpoint` reads as before.
pub use crate::failpoint;

pub use apply::apply_changes;
pub use converge::{ConvergeOptions, ConvergeReport, EffectOutcome, EffectResult, converge};
pub use plan::{Change, ChangeKind, Plan, plan};
