//! systemd over D-Bus (zbus, async on tokio) and the sd_notify protocol.

mod client;
pub mod notify;
mod proxy;

mod unit;

pub use client::SystemdClient;
pub use unit::{ActiveState, JobResult, LoadState, UnitStatus};
