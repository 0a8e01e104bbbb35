//! Delivery counters and the last delivery per channel, for `status` and
//! the metric `sightline_notifications_total{channel,result}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::channel::ChannelKind;

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryResult {
    /// The channel accepted the message.
    Sent,
    /// The attempt failed; the message stays queued for a retry.
    Failed,
    /// The message was given up (queue full, or out of attempts).
    Dropped,
}

impl DeliveryResult {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryResult::Sent => "sent",
            DeliveryResult::Failed => "failed",
            DeliveryResult::Dropped => "dropped",
        }
    }
}

/// The last attempt on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDelivery {
    /// When, seconds since the epoch.
    pub at: u64,
    /// What came of it.
    pub result: DeliveryResult,
    /// The message title.
    pub title: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counters and last deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    /// channel → result → count.
    #[serde(default)]
    pub counts: BTreeMap<ChannelKind, BTreeMap<DeliveryResult, u64>>,
    /// channel → last attempt.
    #[serde(default)]
    pub last: BTreeMap<ChannelKind, LastDelivery>,
}

impl Deliveries {
    /// Counts one attempt.
    pub fn record(&mut self, ch: ChannelKind, last: LastDelivery) {
        *self
            .counts
            .entry(ch)
            .or_default()
            .entry(last.result)
            .or_default() += 1;
        self.last.insert(ch, last);
    }

    /// One counter.
    pub fn count(&self, ch: ChannelKind, r: DeliveryResult) -> u64 {
        self.counts
            .get(&ch)
            .and_then(|m| m.get(&r))
            .copied()
            .unwrap_or(0)
    }

    /// The counters in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut s = String::from(
            "# HELP sightline_notifications_total Notifications sightline sent itself, by channel and result.\n# TYPE sightline_notifications_total counter\n",
        );
        for (ch, m) in &self.counts {
            for (r, n) in m {
                let _ = writeln!(
                    s,
                    "sightline_notifications_total{{channel=\"{}\",result=\"{}\"}} {n}",
                    ch.name(),
                    r.name()
                );
            }
        }
        s
    }
}
