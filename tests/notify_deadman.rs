//! The dead man's switch against the stand-in API server: Alertmanager's
//! Watchdog alert read through the service proxy with the admin client
//! certificate, present, then absent, then back.

mod common;

use common::kubefake::KubeFake;
use sightline::notify::event::{EventKind, Phase};
use sightline::notify::monitor::{Monitor, MonitorState, Observation, PipelineHealth, Thresholds};
use sightline::notify::observe::{ClusterView, StageView, pipeline};
use sightline::state::StageState;

fn api(root: &std::path::Path, url: &str) -> sightline::k3s::K3sApi {
    let tls = root.join("var/lib/rancher/k3s/server/tls");
    let read = |n: &str| std::fs::read(tls.join(n)).unwrap();
    sightline::k3s::K3sApi::new(
        url,
        &read("server-ca.crt"),
        &read("client-admin.crt"),
        &read("client-admin.key"),
    )
    .unwrap()
}

fn cluster(tier: &str, state: StageState) -> ClusterView {
    ClusterView {
        tier: Some(tier.into()),
        stages: vec![
            StageView {
                name: "namespaces".into(),
                state: StageState::Healthy,
                detail: None,
            },
            StageView {
                name: "metrics".into(),
                state,
                detail: None,
            },
        ],
    }
}

/// Each tier and the Service its Alertmanager answers on: kube-prometheus-stack
/// (`fullnameOverride: kps`), and the VM operator's `vmalertmanager-<name>`
/// for the chart's `vmks`, and what sends alerts to it.
const TIERS: [(&str, &str, &str); 2] = [
    ("full", "kps-alertmanager", "Prometheus"),
    ("light", "vmalertmanager-vmks", "vmalert"),
];

#[tokio::test]
async fn watchdog_present_then_absent() {
    for (tier, svc, evaluator) in TIERS {
        let d = tempfile::tempdir().unwrap();
        let fake = KubeFake::start(d.path());
        let api = api(d.path(), &fake.url);
        let healthy = cluster(tier, StageState::Healthy);

        fake.with(|s| {
            s.alertmanager
                .insert(svc.into(), vec!["Watchdog".into(), "InfoInhibitor".into()])
        });
        assert_eq!(
            pipeline(&api, Some(&healthy)).await,
            PipelineHealth::Seen,
            "{tier}"
        );
        let path = fake.with(|s| s.requests.last().cloned().unwrap());
        assert_eq!(
            path,
            format!(
                "/api/v1/namespaces/monitoring/services/{svc}:9093/proxy/api/v2/alerts?filter=alertname%3D%22Watchdog%22"
            )
        );

        // The other tier's Alertmanager answering proves nothing about this one.
        let other = TIERS.iter().find(|(t, _, _)| *t != tier).unwrap().1;
        fake.with(|s| {
            s.alertmanager.clear();
            s.alertmanager.insert(other.into(), vec!["Watchdog".into()]);
        });
        assert!(
            matches!(
                pipeline(&api, Some(&healthy)).await,
                PipelineHealth::Missing(_)
            ),
            "{tier}"
        );

        // Prometheus (or vmalert) stops sending: Alertmanager answers
        // without the Watchdog.
        fake.with(|s| {
            s.alertmanager
                .insert(svc.into(), vec!["InfoInhibitor".into()])
        });
        let missing = pipeline(&api, Some(&healthy)).await;
        assert!(
            matches!(&missing, PipelineHealth::Missing(w) if w.contains("lists no Watchdog") && w.contains(svc) && w.contains(evaluator)),
            "{tier}: {missing:?}"
        );

        // Alertmanager itself gone: no endpoints behind the Service.
        fake.with(|s| s.alertmanager.clear());
        let gone = pipeline(&api, Some(&healthy)).await;
        assert!(
            matches!(&gone, PipelineHealth::Missing(w) if w.contains("503")),
            "{tier}: {gone:?}"
        );

        // Not judged while the stack rolls out.
        assert!(matches!(
            pipeline(&api, Some(&cluster(tier, StageState::Waiting))).await,
            PipelineHealth::NotApplicable(w) if w.contains("rolling out")
        ));
        // k3s down: the proxy does not answer, which is k3s's event, not this one.
        fake.with(|s| s.down = true);
        let down = pipeline(&api, Some(&healthy)).await;
        assert!(matches!(
            down,
            PipelineHealth::Missing(_) | PipelineHealth::NotApplicable(_)
        ));
    }
}

/// A monitor with the default thresholds and nothing seen yet.
fn default_monitor() -> Monitor {
    Monitor::new(
        Thresholds {
            k3s_down: 180,
            pipeline_silent: 15 * 60,
            repeat: 12 * 3600,
        },
        Some(MonitorState::default()),
    )
}

#[tokio::test]
async fn silent_pipeline_becomes_one_event_then_resolves() {
    for (tier, svc, _) in TIERS {
        let d = tempfile::tempdir().unwrap();
        let fake = KubeFake::start(d.path());
        let api = api(d.path(), &fake.url);
        let healthy = cluster(tier, StageState::Healthy);
        let mut m = default_monitor();
        let t0 = 1_780_000_000;
        let mut sent = Vec::new();
        fake.with(|s| s.alertmanager.insert(svc.into(), vec!["Watchdog".into()]));
        for minute in 0..60u64 {
            if minute == 10 {
                fake.with(|s| s.alertmanager.insert(svc.into(), vec![]));
            }
            if minute == 40 {
                fake.with(|s| s.alertmanager.insert(svc.into(), vec!["Watchdog".into()]));
            }
            let o = Observation {
                pipeline: Some(pipeline(&api, Some(&healthy)).await),
                ..Default::default()
            };
            for n in m.observe(&o, t0 + minute * 60) {
                sent.push((minute, n.kind, n.phase));
            }
        }
        assert_eq!(
            sent,
            vec![
                (25, EventKind::PipelineDead, Phase::Firing),
                (40, EventKind::PipelineDead, Phase::Resolved)
            ],
            "{tier}"
        );
    }
}

/// README's "When the cluster cannot tell you" shows the dead man's switch
/// as sent on each tier: those examples are exactly what the monitor and
/// the message renderer produce from the stand-in's answers.
#[tokio::test]
async fn the_readme_examples_are_what_each_tier_sends() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let shown = |m: &sightline::notify::message::Message| {
        let block = format!("```\n{}\n{}```", m.title, m.body);
        assert!(readme.contains(&block), "README lacks:\n{block}");
    };
    // 2026-12-01 03:12:05 UTC, the examples' time.
    let t0 = 1_796_094_725;
    for (tier, svc, _) in TIERS {
        let d = tempfile::tempdir().unwrap();
        let fake = KubeFake::start(d.path());
        let api = api(d.path(), &fake.url);
        let healthy = cluster(tier, StageState::Healthy);
        let mut m = default_monitor();
        fake.with(|s| s.alertmanager.insert(svc.into(), vec![]));
        let mut sent = Vec::new();
        for minute in [0u64, 5, 10, 15, 20, 25, 30] {
            if minute == 30 {
                fake.with(|s| s.alertmanager.insert(svc.into(), vec!["Watchdog".into()]));
            }
            let o = Observation {
                pipeline: Some(pipeline(&api, Some(&healthy)).await),
                ..Default::default()
            };
            sent.extend(m.observe(&o, t0 + minute * 60));
        }
        let [firing, resolved] = sent.as_slice() else {
            panic!("{tier}: {sent:?}");
        };
        shown(&sightline::notify::message::render("pi4-a", firing));
        shown(&sightline::notify::message::render("pi4-a", resolved));
    }
}
