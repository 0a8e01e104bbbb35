//! Delivery: one worker per channel, each retrying with backoff, so a
//! failing channel never delays the others; the caller only enqueues.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use super::channel::{Channel, ChannelKind};
use super::message::Message;
use super::queue::{Pending, Queue};
use super::stats::{Deliveries, DeliveryResult, LastDelivery};
use super::store::JsonFile;

/// How retries are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure; doubled after each further one.
    pub first: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Give up after this many attempts (`None`: keep trying while queued).
    pub max_attempts: Option<u32>,
}

impl Backoff {
    /// The daemon's: 10 s doubling to 15 min, for as long as the message
    /// stays in the bounded queue.
    pub const DAEMON: Backoff = Backoff {
        first: Duration::from_secs(10),
        max: Duration::from_secs(900),
        max_attempts: None,
    };

    /// The wait after `attempts` failures.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.first.saturating_mul(factor).min(self.max)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Shared {
    queue: Mutex<(Queue, JsonFile)>,
    stats: Mutex<(Deliveries, JsonFile)>,
    wake: BTreeMap<ChannelKind, Notify>,
    backoff: Backoff,
    /// A node_exporter textfile for the counters, when set.
    metrics: std::sync::OnceLock<std::path::PathBuf>,
}

impl Shared {
    fn persist_queue(&self, q: &mut (Queue, JsonFile)) {
        if let Err(e) = q.1.save(&q.0) {
            warn!(error = %format!("{e:#}"), "could not write the notification queue");
        }
    }

    fn count(&self, ch: ChannelKind, m: &Message, result: DeliveryResult, error: Option<String>) {
        let mut s = self.stats.lock().expect("stats lock");
        s.0.record(
            ch,
            LastDelivery {
                at: now_ms() / 1000,
                result,
                title: m.title.clone(),
                error,
            },
        );
        let (d, f) = &mut *s;
        if let Err(e) = f.save(d) {
            warn!(error = %format!("{e:#}"), "could not write the delivery counters");
        }
        if let Some(p) = self.metrics.get() {
            // Counters only change here, so this writes only on a change.
            if let Err(e) = crate::atomic::write_atomic(p, d.prometheus().as_bytes(), 0o644) {
                warn!(file = %p.display(), error = %e, "could not write the notification metrics");
            }
        }
    }
}

/// The delivery workers. Dropping it stops them; undelivered messages
/// stay in the queue file for the next start.
pub struct Dispatcher {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts one worker per channel on the current tokio runtime, resuming
    /// the queue in `queue` and the counters in `stats`.
    pub fn start(
        channels: Vec<Channel>,
        mut queue: JsonFile,
        mut stats: JsonFile,
        backoff: Backoff,
    ) -> Dispatcher {
        let mut q: Queue = queue.load().unwrap_or_default();
        // Messages for a channel that is no longer configured cannot go anywhere.
        q.items
            .retain(|p| channels.iter().any(|c| c.kind() == p.channel));
        let d: Deliveries = stats.load().unwrap_or_default();
        let shared = Arc::new(Shared {
            queue: Mutex::new((q, queue)),
            stats: Mutex::new((d, stats)),
            wake: channels.iter().map(|c| (c.kind(), Notify::new())).collect(),
            backoff,
            metrics: std::sync::OnceLock::new(),
        });
        let tasks = channels
            .into_iter()
            .map(|c| tokio::spawn(worker(shared.clone(), c)))
            .collect();
        Dispatcher { shared, tasks }
    }

    /// Also keeps `sightline_notifications_total` in this node_exporter
    /// textfile (real path), written whenever a counter changes.
    pub fn with_metrics(self, textfile: std::path::PathBuf) -> Dispatcher {
        let _ = self.shared.metrics.set(textfile);
        self
    }

    /// Queues a message for every channel and returns at once.
    pub fn enqueue(&self, m: &Message) {
        let kinds: Vec<ChannelKind> = self.shared.wake.keys().copied().collect();
        let mut dropped = Vec::new();
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            for ch in &kinds {
                if let Some(old) = q.0.push(Pending {
                    channel: *ch,
                    message: m.clone(),
                    attempts: 0,
                    next_at_ms: 0,
                    last_error: None,
                }) {
                    dropped.push(old);
                }
            }
            self.shared.persist_queue(&mut q);
        }
        for d in dropped {
            warn!(channel = %d.channel, title = %d.message.title, "notification queue full; dropping the oldest message");
            self.shared.count(
                d.channel,
                &d.message,
                DeliveryResult::Dropped,
                Some("the queue was full".into()),
            );
        }
        for ch in kinds {
            self.shared.wake[&ch].notify_one();
        }
    }

    /// Counters and last deliveries so far.
    pub fn deliveries(&self) -> Deliveries {
        self.shared.stats.lock().expect("stats lock").0.clone()
    }

    /// Messages still waiting.
    pub fn queued(&self) -> Vec<Pending> {
        self.shared
            .queue
            .lock()
            .expect("queue lock")
            .0
            .items
            .clone()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Next {
    Send(Pending),
    Wait(Duration),
    Idle,
}

async fn worker(shared: Arc<Shared>, channel: Channel) {
    let ch = channel.kind();
    loop {
        let next = {
            let q = shared.queue.lock().expect("queue lock");
            match q.0.head(ch) {
                None => Next::Idle,
                Some(p) if p.next_at_ms <= now_ms() => Next::Send(p.clone()),
                Some(p) => Next::Wait(Duration::from_millis(p.next_at_ms - now_ms())),
            }
        };
        match next {
            Next::Idle => shared.wake[&ch].notified().await,
            Next::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shared.wake[&ch].notified() => {}
                }
            }
            Next::Send(p) => {
                let result = channel.send(&p.message).await;
                deliver_result(&shared, ch, &p, result);
            }
        }
    }
}

fn deliver_result(
    shared: &Shared,
    ch: ChannelKind,
    p: &Pending,
    result: Result<(), super::channel::SendError>,
) {
    let id = p.message.id.as_str();
    match result {
        Ok(()) => {
            info!(channel = %ch, title = %p.message.title, attempts = p.attempts + 1, "notification delivered");
            {
                let mut q = shared.queue.lock().expect("queue lock");
                q.0.remove(ch, id);
                shared.persist_queue(&mut q);
            }
            shared.count(ch, &p.message, DeliveryResult::Sent, None);
        }
        Err(e) => {
            let attempts = p.attempts + 1;
            let give_up = shared.backoff.max_attempts.is_some_and(|m| attempts >= m);
            warn!(channel = %ch, title = %p.message.title, attempts, error = %e, give_up, "notification not delivered");
            {
                let mut q = shared.queue.lock().expect("queue lock");
                if give_up {
                    q.0.remove(ch, id);
                } else if let Some(item) = q.0.get_mut(ch, id) {
                    item.attempts = attempts;
                    item.next_at_ms = now_ms() + shared.backoff.delay(attempts).as_millis() as u64;
                    item.last_error = Some(e.to_string());
                }
                shared.persist_queue(&mut q);
            }
            shared.count(ch, &p.message, DeliveryResult::Failed, Some(e.to_string()));
            if give_up {
                shared.count(ch, &p.message, DeliveryResult::Dropped, Some(e.to_string()));
            }
        }
    }
}

/// Sends one message through one channel now, retrying with `backoff`
/// (for `notify --test`). Returns the attempts made and the last error.
pub async fn send_with_retry(
    channel: &Channel,
    m: &Message,
    backoff: Backoff,
) -> (u32, Result<(), super::channel::SendError>) {
    let max = backoff.max_attempts.unwrap_or(1).max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match channel.send(m).await {
            Ok(()) => return (attempt, Ok(())),
            Err(e) if attempt >= max => return (attempt, Err(e)),
            Err(e) => {
                warn!(channel = %channel.kind(), attempt, error = %e, "test notification failed; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
        }
    }
}
