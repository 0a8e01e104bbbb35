//! sightline's own notifications: when the cluster cannot alert, the host
//! agent still can.
//!
//! | module | concern |
//! |---|---|
//! | [`event`], [`k3s`] | what is reported, and k3s down on purpose vs by failure |
//! | [`monitor`] | the state machine: thresholds, repeat, resolved |
//! | [`observe`], [`marker`] | gathering facts: D-Bus, `/readyz`, Alertmanager, boot, throttle |
//! | [`message`] | the text a person reads |
//! | [`channel`] | ntfy, Discord, email |
//! | [`queue`], [`dispatch`], [`stats`], [`store`] | delivery with retries, the queue file, counters |
//! | [`secrets`] | secret files, systemd credentials, refusing readable secrets |
//! | [`notifier`] | the one object the daemon owns |

pub mod channel;
pub mod dispatch;
pub mod event;
pub mod k3s;
pub mod marker;
pub mod message;
pub mod monitor;
pub mod notifier;
pub mod observe;
pub mod queue;
pub mod secrets;
pub mod stats;
pub mod store;

pub use notifier::{Notifier, metrics_textfile, record_clean_stop};

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
