//! The monitor: a pure state machine fed with observations and the time.
//!
//! A lasting condition (k3s down, pipeline silent, stage failed) becomes an
//! event once it has lasted its threshold; the event is sent when it opens,
//! again at most every `repeat_hours` while it lasts, and "resolved" when
//! the condition is gone. One-off facts (a rollback, an unclean restart,
//! under-voltage since boot) are sent once. What the monitor must remember
//! across a daemon restart is [`MonitorState`]; it changes only at
//! transitions, so the daemon writes it only then.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{EventKind, Notice, Phase};
use super::k3s::K3sHealth;
use crate::config::NotifyConfig;

/// Thresholds, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// k3s down for this long opens an event.
    pub k3s_down: u64,
    /// The Watchdog alert unseen for this long opens an event.
    pub pipeline_silent: u64,
    /// An open event is sent again after this long.
    pub repeat: u64,
}

impl From<&NotifyConfig> for Thresholds {
    fn from(c: &NotifyConfig) -> Self {
        Thresholds {
            k3s_down: c.k3s_down_minutes * 60,
            pipeline_silent: c.pipeline_silent_minutes * 60,
            repeat: c.repeat_hours * 3600,
        }
    }
}

/// An event that has been sent and not resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenEvent {
    /// What.
    pub kind: EventKind,
    /// Which (a stage name), or empty.
    pub subject: String,
    /// When the condition started, seconds since the epoch.
    pub since: u64,
    /// When it was last sent.
    pub last_sent: u64,
}

/// What survives a daemon restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    /// Open events by key.
    #[serde(default)]
    pub open: BTreeMap<String, OpenEvent>,
    /// Conditions seen but not yet past their threshold: key → since.
    #[serde(default)]
    pub pending: BTreeMap<String, u64>,
    /// The boot during which the daemon last started.
    #[serde(default)]
    pub running_boot_id: Option<String>,
    /// The boot whose under-voltage/throttling was reported.
    #[serde(default)]
    pub power_reported_boot: Option<String>,
    /// The last rollback reported (its time and digest).
    #[serde(default)]
    pub last_rollback: Option<String>,
}

/// Whether the Watchdog alert was seen this poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum PipelineHealth {
    /// Alertmanager lists the firing Watchdog alert.
    Seen,
    /// Alertmanager answered (or not) without it.
    Missing(String),
    /// Not checked: k3s down, the stack still rolling out, or not installed.
    NotApplicable(String),
}

/// A failed stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedStage {
    /// Stage name.
    pub name: String,
    /// Why, as the rollout recorded it.
    pub detail: String,
}

/// The last rollback sightline recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// Unique key (time and digest).
    pub key: String,
    /// When, seconds since the epoch.
    pub at: u64,
    /// Why k3s was not ready.
    pub reason: String,
    /// Where the rejected files are kept.
    pub kept_in: String,
}

/// One poll's worth of facts. `None` means "could not tell": the monitor
/// then keeps what it knew.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// k3s's state.
    pub k3s: Option<K3sHealth>,
    /// The dead man's switch.
    pub pipeline: Option<PipelineHealth>,
    /// Failed stages.
    pub failed_stages: Option<Vec<FailedStage>>,
    /// The last recorded rollback.
    pub rollback: Option<Rollback>,
    /// Under-voltage/throttling conditions latched since this boot.
    pub power: Option<PowerSeen>,
}

/// Throttle conditions latched since boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerSeen {
    /// This boot.
    pub boot_id: String,
    /// Conditions that occurred, e.g. "under-voltage".
    pub occurred: Vec<String>,
}

impl PowerSeen {
    /// Whether under-voltage is among the conditions.
    pub fn under_voltage(&self) -> bool {
        let uv = crate::throttle::CONDITIONS[0].help;
        self.occurred.iter().any(|c| c == uv)
    }
}

/// What the daemon finds when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFacts {
    /// This boot's ID.
    pub boot_id: String,
    /// When this boot started, seconds since the epoch.
    pub booted_at: u64,
    /// The boot ID in the clean-stop marker, if the last stop was clean.
    pub clean_stop_boot: Option<String>,
    /// The watchdog driver reported that it reset the card.
    pub watchdog_reset: Option<String>,
    /// The firmware's under-voltage-occurred bit is set.
    pub under_voltage: bool,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Monitor {
    limits: Thresholds,
    state: MonitorState,
    fresh: bool,
}

const K3S: &str = "k3s_down";
const PIPELINE: &str = "pipeline_dead";

fn stage_key(name: &str) -> String {
    format!("stage_failed/{name}")
}

/// A lasting condition this poll: `None` unknown, `Some(None)` absent.
type Cond = Option<Option<(u64, Vec<String>)>>;

impl Monitor {
    /// A monitor resuming from `state`; `None` for the first start ever
    /// (then facts that predate it, such as an old rollback, are not news).
    pub fn new(limits: Thresholds, state: Option<MonitorState>) -> Monitor {
        Monitor {
            limits,
            fresh: state.is_none(),
            state: state.unwrap_or_default(),
        }
    }

    /// What must be persisted.
    pub fn state(&self) -> &MonitorState {
        &self.state
    }

    /// New thresholds (after a configuration reload).
    pub fn set_limits(&mut self, limits: Thresholds) {
        self.limits = limits;
    }

    /// Called once when the daemon starts: the unclean-restart check. The
    /// previous boot ended uncleanly when the daemon ran during it and left
    /// no clean-stop marker for it.
    pub fn start(&mut self, f: &StartFacts, now: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(prev) = self.state.running_boot_id.clone()
            && prev != f.boot_id
            && f.clean_stop_boot.as_deref() != Some(prev.as_str())
        {
            let mut details = vec![format!(
                "The previous boot ended without a clean shutdown (power loss, a hang reset by the hardware watchdog, or a kernel panic); this boot started at {}.",
                super::message::utc(f.booted_at)
            )];
            if let Some(w) = &f.watchdog_reset {
                details.push(format!("The watchdog driver reports a reset: {w}."));
            }
            if f.under_voltage {
                details.push("The firmware reports under-voltage since boot: the power supply is the likely cause.".into());
            }
            out.push(Notice {
                kind: EventKind::UncleanRestart,
                subject: String::new(),
                phase: Phase::Firing,
                since: f.booted_at,
                at: now,
                details,
            });
        }
        self.state.running_boot_id = Some(f.boot_id.clone());
        out
    }

    /// Feeds one observation; returns what to send.
    pub fn observe(&mut self, o: &Observation, now: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        let k3s: Cond = o.k3s.as_ref().map(|h| match h {
            K3sHealth::Down { since, cause } => Some((
                if *since > 0 { (*since).min(now) } else { now },
                vec![format!("k3s is not serving: {cause}.")],
            )),
            _ => None,
        });
        self.lasting(
            K3S,
            EventKind::K3sDown,
            "",
            k3s,
            self.limits.k3s_down,
            now,
            &mut out,
        );
        if let Some(K3sHealth::OnPurpose { how }) = &o.k3s {
            // Not trouble; a silent pipeline is explained by it too.
            tracing::debug!(how = %how, "k3s stopped on purpose");
        }

        let pipeline: Cond = match &o.pipeline {
            Some(PipelineHealth::Seen) => Some(None),
            Some(PipelineHealth::Missing(why)) => Some(Some((
                now,
                vec![format!(
                    "Alertmanager's always-firing Watchdog alert has not been seen: {why}. Alerts from the cluster are probably not being delivered."
                )],
            ))),
            Some(PipelineHealth::NotApplicable(_)) => {
                // Re-arm the grace period for when it applies again.
                self.state.pending.remove(PIPELINE);
                None
            }
            None => None,
        };
        self.lasting(
            PIPELINE,
            EventKind::PipelineDead,
            "",
            pipeline,
            self.limits.pipeline_silent,
            now,
            &mut out,
        );

        if let Some(failed) = &o.failed_stages {
            let mut keys: Vec<(String, String)> = self
                .state
                .open
                .iter()
                .filter(|(_, e)| e.kind == EventKind::StageFailed)
                .map(|(k, e)| (k.clone(), e.subject.clone()))
                .collect();
            for f in failed {
                keys.retain(|(_, s)| *s != f.name);
                let cond = Some(Some((now, vec![format!("Stage {}: {}", f.name, f.detail)])));
                self.lasting(
                    &stage_key(&f.name),
                    EventKind::StageFailed,
                    &f.name,
                    cond,
                    0,
                    now,
                    &mut out,
                );
            }
            for (key, subject) in keys {
                self.lasting(
                    &key,
                    EventKind::StageFailed,
                    &subject,
                    Some(None),
                    0,
                    now,
                    &mut out,
                );
            }
        }

        if let Some(r) = &o.rollback
            && self.state.last_rollback.as_deref() != Some(r.key.as_str())
        {
            if !self.fresh {
                out.push(Notice {
                    kind: EventKind::K3sRolledBack,
                    subject: String::new(),
                    phase: Phase::Firing,
                    since: r.at,
                    at: now,
                    details: vec![
                        format!(
                            "k3s did not become ready after sightline's change: {}.",
                            r.reason
                        ),
                        "sightline restored the previous files and restarted k3s.".into(),
                        format!("The rejected files are kept in {}.", r.kept_in),
                    ],
                });
            }
            self.state.last_rollback = Some(r.key.clone());
        }

        if let Some(p) = &o.power
            && !p.occurred.is_empty()
            && self.state.power_reported_boot.as_deref() != Some(p.boot_id.as_str())
        {
            out.push(Notice {
                kind: EventKind::PowerTrouble,
                subject: String::new(),
                phase: Phase::Firing,
                since: now,
                at: now,
                details: vec![
                    format!(
                        "The firmware reports since boot: {}.",
                        p.occurred.join(", ")
                    ),
                    if p.under_voltage() {
                        "Under-voltage means the power supply or its cable cannot deliver enough current: use a supply rated for this board.".into()
                    } else {
                        "Throttling without under-voltage means the SoC ran too hot: check the cooling.".into()
                    },
                ],
            });
            self.state.power_reported_boot = Some(p.boot_id.clone());
        }
        self.fresh = false;
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn lasting(
        &mut self,
        key: &str,
        kind: EventKind,
        subject: &str,
        cond: Cond,
        threshold: u64,
        now: u64,
        out: &mut Vec<Notice>,
    ) {
        let notice = |phase, since, details| Notice {
            kind,
            subject: subject.to_string(),
            phase,
            since,
            at: now,
            details,
        };
        match cond {
            None => {}
            Some(None) => {
                self.state.pending.remove(key);
                if let Some(ev) = self.state.open.remove(key) {
                    out.push(notice(Phase::Resolved, ev.since, Vec::new()));
                }
            }
            Some(Some((since, details))) => {
                if let Some(ev) = self.state.open.get_mut(key) {
                    if now.saturating_sub(ev.last_sent) >= self.limits.repeat {
                        ev.last_sent = now;
                        out.push(notice(Phase::Repeat, ev.since, details));
                    }
                    return;
                }
                let since = *self.state.pending.entry(key.to_string()).or_insert(since);
                if now.saturating_sub(since) >= threshold {
                    self.state.pending.remove(key);
                    self.state.open.insert(
                        key.to_string(),
                        OpenEvent {
                            kind,
                            subject: subject.to_string(),
                            since,
                            last_sent: now,
                        },
                    );
                    out.push(notice(Phase::Firing, since, details));
                }
            }
        }
    }
}
