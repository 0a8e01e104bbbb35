//! Messages not delivered yet: a small bounded queue, kept in a file under
//! the state directory so that a network outage at 3 am loses nothing.

use serde::{Deserialize, Serialize};

use super::channel::ChannelKind;
use super::message::Message;

/// At most this many messages wait; the oldest is dropped beyond it.
pub const MAX_QUEUED: usize = 64;

/// One message waiting for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The channel.
    pub channel: ChannelKind,
    /// The message.
    pub message: Message,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time, ms since the epoch.
    pub next_at_ms: u64,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The queue, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Waiting messages.
    pub items: Vec<Pending>,
}

impl Queue {
    /// Adds a message; returns the one dropped to stay within the bound.
    pub fn push(&mut self, p: Pending) -> Option<Pending> {
        self.items.push(p);
        (self.items.len() > MAX_QUEUED).then(|| self.items.remove(0))
    }

    /// The oldest message for a channel.
    pub fn head(&self, ch: ChannelKind) -> Option<&Pending> {
        self.items.iter().find(|p| p.channel == ch)
    }

    /// Removes the message `id` for channel `ch`.
    pub fn remove(&mut self, ch: ChannelKind, id: &str) -> Option<Pending> {
        let i = self
            .items
            .iter()
            .position(|p| p.channel == ch && p.message.id == id)?;
        Some(self.items.remove(i))
    }

    /// The message `id` for channel `ch`, to update.
    pub fn get_mut(&mut self, ch: ChannelKind, id: &str) -> Option<&mut Pending> {
        self.items
            .iter_mut()
            .find(|p| p.channel == ch && p.message.id == id)
    }
}
