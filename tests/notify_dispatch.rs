//! The dispatcher: each channel its own worker with backoff, the caller
//! only enqueues, undelivered messages survive a restart in the queue file.

mod common;

use std::time::{Duration, Instant};

use common::httprec::HttpRecorder;
use sightline::notify::channel::discord::Discord;
use sightline::notify::channel::ntfy::Ntfy;
use sightline::notify::channel::{Channel, ChannelKind};
use sightline::notify::dispatch::{Backoff, Dispatcher};
use sightline::notify::event::{EventKind, Notice, Phase};
use sightline::notify::message::render;
use sightline::notify::queue::Queue;
use sightline::notify::secrets::Secret;
use sightline::notify::stats::DeliveryResult;
use sightline::notify::store::JsonFile;
use sightline::sysroot::Sysroot;

const FAST: Backoff = Backoff {
    first: Duration::from_millis(200),
    max: Duration::from_millis(400),
    max_attempts: None,
};

fn channels(http: &HttpRecorder) -> Vec<Channel> {
    vec![
        Channel::Ntfy(Ntfy::new(Secret::new(format!("{}/t", http.url)), None)),
        Channel::Discord(Discord::new(Secret::new(format!("{}/d", http.url)))),
    ]
}

fn message() -> sightline::notify::message::Message {
    render(
        "node-1",
        &Notice {
            kind: EventKind::K3sDown,
            subject: String::new(),
            phase: Phase::Firing,
            since: 1_780_000_000,
            at: 1_780_000_200,
            details: vec!["k3s is not serving.".into()],
        },
    )
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failing_channel_delays_neither_the_caller_nor_the_others() {
    let d = tempfile::tempdir().unwrap();
    let root = Sysroot::new(d.path());
    let http = HttpRecorder::start();
    http.answer("/d", &[500, 500, 200]);
    let disp = Dispatcher::start(
        channels(&http),
        JsonFile::new(&root, "/q.json"),
        JsonFile::new(&root, "/s.json"),
        FAST,
    )
    .with_metrics(d.path().join("n.prom"));
    let t = Instant::now();
    disp.enqueue(&message());
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "enqueue only queues"
    );
    wait_for("ntfy", || http.requests("/t").len() == 1).await;
    let ntfy_at = http.requests("/t")[0].at;
    wait_for("discord delivered", || {
        disp.deliveries()
            .count(ChannelKind::Discord, DeliveryResult::Sent)
            == 1
    })
    .await;
    let tries = http.requests("/d");
    assert_eq!(tries.len(), 3, "two failures, then success");
    assert!(
        ntfy_at < tries[1].at,
        "ntfy did not wait for Discord's retries"
    );
    assert!(
        tries[1].at - tries[0].at >= Duration::from_millis(190),
        "backoff"
    );
    let s = disp.deliveries();
    assert_eq!(s.count(ChannelKind::Discord, DeliveryResult::Failed), 2);
    assert_eq!(s.count(ChannelKind::Ntfy, DeliveryResult::Sent), 1);
    assert!(disp.queued().is_empty());
    let prom = s.prometheus();
    assert!(
        prom.contains("sightline_notifications_total{channel=\"discord\",result=\"failed\"} 2"),
        "{prom}"
    );
    assert!(
        prom.contains("sightline_notifications_total{channel=\"ntfy\",result=\"sent\"} 1"),
        "{prom}"
    );
    // The counters are on disk for `status`.
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("s.json")).unwrap()).unwrap();
    assert_eq!(on_disk["counts"]["discord"]["sent"], 1);
    // And for node_exporter.
    assert_eq!(
        std::fs::read_to_string(d.path().join("n.prom")).unwrap(),
        prom
    );
}

#[tokio::test]
async fn undelivered_messages_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let root = Sysroot::new(d.path());
    let http = HttpRecorder::start();
    http.answer("/d", &[503]);
    let disp = Dispatcher::start(
        channels(&http),
        JsonFile::new(&root, "/q.json"),
        JsonFile::new(&root, "/s.json"),
        FAST,
    );
    disp.enqueue(&message());
    wait_for("discord tried", || http.requests("/d").len() >= 2).await;
    wait_for("ntfy", || http.requests("/t").len() == 1).await;
    drop(disp);
    let q: Queue =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("q.json")).unwrap()).unwrap();
    assert_eq!(q.items.len(), 1, "only Discord's copy waits: {q:?}");
    assert_eq!(q.items[0].channel, ChannelKind::Discord);
    assert!(q.items[0].attempts >= 2);
    assert!(q.items[0].last_error.as_deref().unwrap().contains("503"));

    // The network is back; the next start delivers it, and only it.
    http.answer("/d", &[200]);
    let disp = Dispatcher::start(
        channels(&http),
        JsonFile::new(&root, "/q.json"),
        JsonFile::new(&root, "/s.json"),
        FAST,
    );
    wait_for("delivered after restart", || {
        disp.deliveries()
            .count(ChannelKind::Discord, DeliveryResult::Sent)
            == 1
    })
    .await;
    assert_eq!(http.requests("/t").len(), 1, "ntfy not sent twice");
    assert!(disp.queued().is_empty());
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let d = tempfile::tempdir().unwrap();
    let root = Sysroot::new(d.path());
    let http = HttpRecorder::start();
    http.answer("/d", &[500]);
    let disp = Dispatcher::start(
        vec![Channel::Discord(Discord::new(Secret::new(format!(
            "{}/d",
            http.url
        ))))],
        JsonFile::new(&root, "/q.json"),
        JsonFile::new(&root, "/s.json"),
        Backoff {
            first: Duration::from_secs(60),
            ..FAST
        },
    );
    for i in 0..(sightline::notify::queue::MAX_QUEUED + 5) {
        let mut m = message();
        m.id = format!("m{i}");
        disp.enqueue(&m);
    }
    assert_eq!(disp.queued().len(), sightline::notify::queue::MAX_QUEUED);
    assert_eq!(
        disp.deliveries()
            .count(ChannelKind::Discord, DeliveryResult::Dropped),
        5
    );
}
