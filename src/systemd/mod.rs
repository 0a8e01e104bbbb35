//! systemd over D-Bus (zbus, async on tokio) and the sd_notify protocol.

mod client;
mod health;
pub mod notify;
mod proxy;

pub use client::{JobResult, SystemdClient, expect_done};
pub use health::{ActiveState, UnitHealth};
