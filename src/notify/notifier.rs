//! The one object the daemon owns: observe, decide, enqueue.

use std::time::Duration;

use anyhow::Result;
use tracing::{info, warn};

use super::channel::{self, Channel};
use super::dispatch::{Backoff, Dispatcher};
use super::event::Notice;
use super::message::{Message, node_name, render};
use super::monitor::{Monitor, MonitorState, OpenEvent, Thresholds};
use super::observe::{ClusterView, observe, start_facts};
use super::stats::Deliveries;
use super::store::{JsonFile, Paths};
use crate::config::{Config, LoadedConfig};
use crate::k3s::K3sApi;
use crate::sysroot::Sysroot;
use crate::systemd::SystemdClient;

/// The longest one observation may take (D-Bus, /readyz, the service proxy).
pub const OBSERVE_BUDGET: Duration = Duration::from_secs(20);

/// Watches k3s, the alert pipeline and the node, and sends what matters.
pub struct Notifier {
    root: Sysroot,
    cfg: Config,
    node: String,
    monitor: Monitor,
    events: JsonFile,
    dispatcher: Option<Dispatcher>,
    api: Option<K3sApi>,
    systemd: Option<SystemdClient>,
    bus: Option<String>,
}

impl Notifier {
    /// Builds the notifier and starts its delivery workers (call inside a
    /// tokio runtime). Off when `[notify]` says so or no channel is set;
    /// an unusable secret is an error naming the file and the fix.
    pub fn new(root: &Sysroot, cfg: &LoadedConfig, bus: Option<&str>) -> Result<Notifier> {
        let c = &cfg.config;
        let paths = Paths::new(c);
        let dispatcher = if c.notify_enabled() {
            let channels: Vec<Channel> = channel::from_config(root, cfg)?;
            (!channels.is_empty()).then(|| {
                Dispatcher::start(
                    channels,
                    JsonFile::new(root, &paths.queue),
                    JsonFile::new(root, &paths.deliveries),
                    Backoff::DAEMON,
                )
                .with_metrics(root.path(metrics_textfile(c)))
            })
        } else {
            None
        };
        let mut events = JsonFile::new(root, &paths.events);
        let state: Option<MonitorState> = events.load();
        Ok(Notifier {
            root: root.clone(),
            cfg: c.clone(),
            node: node_name(root),
            monitor: Monitor::new(Thresholds::from(&c.notify), state),
            events,
            dispatcher,
            api: None,
            systemd: None,
            bus: bus.map(str::to_string),
        })
    }

    /// Whether anything is sent at all.
    pub fn enabled(&self) -> bool {
        self.dispatcher.is_some()
    }

    /// Once, when the daemon starts: reads and clears the clean-stop marker
    /// and reports an unclean restart.
    pub fn on_start(&mut self, now: u64) -> Vec<Notice> {
        let facts = match start_facts(&self.root, &self.cfg) {
            Ok(Some(f)) => f,
            Ok(None) => return Vec::new(),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "could not read the clean-stop marker");
                return Vec::new();
            }
        };
        let notices = self.monitor.start(&facts, now);
        self.emit(&notices);
        notices
    }

    /// One poll: observes (within [`OBSERVE_BUDGET`]), feeds the monitor,
    /// queues what must be sent and persists the monitor's state when it
    /// changed. Delivery happens in the background.
    pub async fn observe_and_send(
        &mut self,
        cluster: Option<&ClusterView>,
        now: u64,
    ) -> Vec<Notice> {
        if self.api.is_none() {
            self.api = K3sApi::from_config(&self.root, &self.cfg).ok();
        }
        if self.systemd.is_none() && (self.root.is_host() || self.bus.is_some()) {
            self.systemd = SystemdClient::connect(self.bus.as_deref()).await.ok();
        }
        let seen = tokio::time::timeout(
            OBSERVE_BUDGET,
            observe(
                &self.root,
                &self.cfg,
                self.systemd.as_ref(),
                self.api.as_ref(),
                cluster,
            ),
        )
        .await;
        let Ok(obs) = seen else {
            warn!(
                budget_s = OBSERVE_BUDGET.as_secs(),
                "observation took too long; skipped"
            );
            self.systemd = None;
            return Vec::new();
        };
        if obs.k3s.is_none() {
            // Reconnect next time.
            self.systemd = None;
        }
        let notices = self.monitor.observe(&obs, now);
        self.emit(&notices);
        notices
    }

    /// Applies a reloaded configuration's thresholds.
    pub fn reload(&mut self, cfg: &LoadedConfig) {
        self.monitor
            .set_limits(Thresholds::from(&cfg.config.notify));
    }

    /// Events sent and not resolved.
    pub fn open_events(&self) -> Vec<OpenEvent> {
        self.monitor.state().open.values().cloned().collect()
    }

    /// Delivery counters and the last delivery per channel.
    pub fn deliveries(&self) -> Deliveries {
        self.dispatcher
            .as_ref()
            .map(Dispatcher::deliveries)
            .unwrap_or_default()
    }

    fn emit(&mut self, notices: &[Notice]) {
        for n in notices {
            let m: Message = render(&self.node, n);
            info!(kind = ?n.kind, phase = ?n.phase, subject = %n.subject, title = %m.title, queued = self.dispatcher.is_some(), "notification");
            if let Some(d) = &self.dispatcher {
                d.enqueue(&m);
            }
        }
        // After the queue holds the messages: a crash in between resends
        // rather than loses.
        if let Err(e) = self.events.save(self.monitor.state()) {
            warn!(error = %format!("{e:#}"), "could not write the notifier's events");
        }
    }
}

/// The notification counters' textfile: beside `[daemon] metrics_file`,
/// so node_exporter's textfile collector picks it up too.
pub fn metrics_textfile(cfg: &Config) -> String {
    let dir = std::path::Path::new(&cfg.daemon.metrics_file)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    format!("{}/sightline_notifications.prom", dir.trim_end_matches('/'))
}

/// On SIGTERM: records the clean stop for this boot.
pub fn record_clean_stop(root: &Sysroot, cfg: &Config) {
    if let Err(e) = super::marker::write_clean_stop(root, cfg) {
        warn!(error = %format!("{e:#}"), "could not write the clean-stop marker");
    }
}
