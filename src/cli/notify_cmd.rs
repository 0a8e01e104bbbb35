//! `sightline notify`: `--test` sends a test message through every
//! configured channel now (no daemon needed); without it, shows the open
//! events, the queue and the last delivery per channel.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::agent::Ctx;
use crate::notify::channel::{self, ChannelKind};
use crate::notify::dispatch::{Backoff, send_with_retry};
use crate::notify::event::{EventKind, Notice, Phase};
use crate::notify::k3s::K3sHealth;
use crate::notify::message::{node_name, render, utc};
use crate::notify::monitor::{MonitorState, Observation, PipelineHealth};
use crate::notify::observe::observe;
use crate::notify::queue::Queue;
use crate::notify::stats::{Deliveries, DeliveryResult, LastDelivery};
use crate::notify::store::{JsonFile, Paths};

/// Three attempts, 1 s then 2 s apart: enough to ride out a blip, short
/// enough for a person waiting at a terminal.
const TEST_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(2),
    max_attempts: Some(3),
};

#[derive(Debug, Serialize)]
struct ChannelResult {
    channel: ChannelKind,
    ok: bool,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `notify`.
pub fn run(ctx: &Ctx, test: bool, json: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    if !test {
        return show(ctx, &cfg.config, json);
    }
    let channels = channel::from_config(&ctx.root, &cfg)?;
    if channels.is_empty() {
        anyhow::bail!(
            "no notification channel is configured: set ntfy_url, discord_webhook_url_file or email_to under [alerting] in /etc/sightline/config.toml"
        );
    }
    let now = crate::notify::now();
    let notice = Notice {
        kind: EventKind::Test,
        subject: String::new(),
        phase: Phase::Firing,
        since: now,
        at: now,
        details: vec!["This is a test from `sightline notify --test`. If you read this, sightline can reach you when the cluster cannot.".into()],
    };
    let msg = render(&node_name(&ctx.root), &notice);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Every channel at once: a slow or failing one delays no other.
    let results: Vec<ChannelResult> = rt.block_on(async {
        let sends = channels.iter().map(|c| async {
            let (attempts, r) = send_with_retry(c, &msg, TEST_BACKOFF).await;
            ChannelResult {
                channel: c.kind(),
                ok: r.is_ok(),
                attempts,
                error: r.err().map(|e| e.to_string()),
            }
        });
        futures_util::future::join_all(sends).await
    });
    record(ctx, &cfg.config, &results, &msg.title);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "channels": results }))?
        );
    } else {
        for r in &results {
            let tries = if r.attempts == 1 {
                "1 attempt".to_string()
            } else {
                format!("{} attempts", r.attempts)
            };
            match &r.error {
                None => println!("{:<8} sent ({tries})", r.channel.name()),
                Some(e) => println!("{:<8} FAILED after {tries}: {e}", r.channel.name()),
            }
        }
    }
    Ok(if results.iter().all(|r| r.ok) { 0 } else { 1 })
}

/// Counts the test's attempts with the daemon's, when the state directory
/// is writable (it is not for an unprivileged user; that is fine).
fn record(ctx: &Ctx, cfg: &crate::config::Config, results: &[ChannelResult], title: &str) {
    let mut file = JsonFile::new(&ctx.root, &Paths::new(cfg).deliveries);
    let mut d: Deliveries = file.load().unwrap_or_default();
    let at = crate::notify::now();
    for r in results {
        let failures = if r.ok { r.attempts - 1 } else { r.attempts };
        for _ in 0..failures {
            d.record(
                r.channel,
                LastDelivery {
                    at,
                    result: DeliveryResult::Failed,
                    title: title.into(),
                    error: r.error.clone(),
                },
            );
        }
        if r.ok {
            d.record(
                r.channel,
                LastDelivery {
                    at,
                    result: DeliveryResult::Sent,
                    title: title.into(),
                    error: None,
                },
            );
        }
    }
    if let Err(e) = file.save(&d) {
        tracing::debug!(error = %format!("{e:#}"), "test deliveries not recorded");
    }
}

/// What the notifier sees right now: k3s (and how a stop on purpose was
/// told from a failure) and the alert pipeline. Needs the system bus.
fn probe(ctx: &Ctx, cfg: &crate::config::Config) -> Option<Observation> {
    if !ctx.root.is_host() && ctx.system_bus.is_none() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let sd = crate::systemd::SystemdClient::connect(ctx.system_bus.as_deref())
            .await
            .ok()?;
        let api = crate::k3s::K3sApi::from_config(&ctx.root, cfg).ok();
        let cluster = crate::agent::Status::read(&ctx.root, cfg)
            .ok()
            .map(|st| crate::agent::cluster_view(&st));
        Some(observe(&ctx.root, cfg, Some(&sd), api.as_ref(), cluster.as_ref()).await)
    })
}

fn k3s_line(h: &K3sHealth) -> String {
    match h {
        K3sHealth::Ready => "ready".into(),
        K3sHealth::NotInstalled => "not installed".into(),
        K3sHealth::OnPurpose { how } => format!("stopped on purpose ({how}); not reported"),
        K3sHealth::Down { cause, .. } => format!("DOWN by failure: {cause}"),
    }
}

fn pipeline_line(p: &PipelineHealth) -> String {
    match p {
        PipelineHealth::Seen => "alive (Watchdog alert seen)".into(),
        PipelineHealth::Missing(w) => format!("SILENT: {w}"),
        PipelineHealth::NotApplicable(w) => format!("not checked: {w}"),
    }
}

fn show(ctx: &Ctx, cfg: &crate::config::Config, json: bool) -> Result<u8> {
    let now = probe(ctx, cfg);
    if !json {
        if let Some(o) = &now {
            if let Some(k) = &o.k3s {
                println!("k3s: {}", k3s_line(k));
            }
            if let Some(p) = &o.pipeline {
                println!("alert pipeline: {}", pipeline_line(p));
            }
        }
        print!("{}", status_section(ctx, cfg));
        return Ok(0);
    }
    let (events, queue, deliveries) = files(ctx, cfg);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "enabled": cfg.notify_enabled(),
            "k3s": now.as_ref().and_then(|o| o.k3s.clone()),
            "pipeline": now.as_ref().and_then(|o| o.pipeline.clone()),
            "open_events": events.open.values().collect::<Vec<_>>(),
            "queued": queue.items.len(),
            "deliveries": deliveries,
        }))?
    );
    Ok(0)
}

/// The notifier's part of `sightline status`, read from its files (for
/// `status_cmd` to append).
pub fn status_section(ctx: &Ctx, cfg: &crate::config::Config) -> String {
    let (events, queue, deliveries) = files(ctx, cfg);
    render_summary(cfg.notify_enabled(), &events, &queue, &deliveries)
}

/// The notifier's files: open events, queue, counters (empty when absent).
fn files(ctx: &Ctx, cfg: &crate::config::Config) -> (MonitorState, Queue, Deliveries) {
    let p = Paths::new(cfg);
    let load = |host: &str| JsonFile::new(&ctx.root, host);
    (
        load(&p.events).load().unwrap_or_default(),
        load(&p.queue).load().unwrap_or_default(),
        load(&p.deliveries).load().unwrap_or_default(),
    )
}

/// The notifier's part of `status`: open events, queue, last delivery per channel.
pub fn render_summary(
    enabled: bool,
    events: &MonitorState,
    queue: &Queue,
    deliveries: &Deliveries,
) -> String {
    let mut s = format!("notifications: {}\n", if enabled { "on" } else { "off" });
    if events.open.is_empty() {
        s.push_str("  open events: none\n");
    }
    for e in events.open.values() {
        let subject = if e.subject.is_empty() {
            String::new()
        } else {
            format!(" ({})", e.subject)
        };
        s.push_str(&format!(
            "  open: {}{subject} since {}, last sent {}\n",
            e.kind.headline(),
            utc(e.since),
            utc(e.last_sent)
        ));
    }
    if !queue.items.is_empty() {
        s.push_str(&format!(
            "  waiting to be delivered: {}\n",
            queue.items.len()
        ));
    }
    for (ch, l) in &deliveries.last {
        s.push_str(&format!(
            "  {:<8} last {} at {}: {}{}\n",
            ch.name(),
            l.result.name(),
            utc(l.at),
            l.title,
            l.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        ));
    }
    s
}
