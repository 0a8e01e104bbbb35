//! The monitor's state machine: thresholds, repeat, resolved, stops on
//! purpose, the unclean-restart marker, one-off facts.

use sightline::notify::event::{EventKind, Phase};
use sightline::notify::k3s::{DownCause, K3sHealth, OnPurpose};
use sightline::notify::monitor::{
    FailedStage, Monitor, MonitorState, Observation, PipelineHealth, PowerSeen, Rollback,
    StartFacts, Thresholds,
};

const T0: u64 = 1_780_000_000;
const MIN: u64 = 60;

fn limits() -> Thresholds {
    Thresholds {
        k3s_down: 3 * MIN,
        pipeline_silent: 15 * MIN,
        repeat: 12 * 3600,
    }
}

fn k3s(h: K3sHealth) -> Observation {
    Observation {
        k3s: Some(h),
        ..Default::default()
    }
}

fn failed() -> K3sHealth {
    K3sHealth::Down {
        since: T0,
        cause: DownCause::Restarting("exit-code".into()),
    }
}

fn phases(n: &[sightline::notify::event::Notice]) -> Vec<(EventKind, Phase)> {
    n.iter().map(|n| (n.kind, n.phase)).collect()
}

#[test]
fn k3s_down_fires_after_threshold_repeats_and_resolves() {
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    assert!(m.observe(&k3s(K3sHealth::Ready), T0 - 10).is_empty());
    assert!(m.observe(&k3s(failed()), T0 + 30).is_empty());
    assert!(m.observe(&k3s(failed()), T0 + 2 * MIN).is_empty());
    let n = m.observe(&k3s(failed()), T0 + 3 * MIN);
    assert_eq!(phases(&n), vec![(EventKind::K3sDown, Phase::Firing)]);
    assert_eq!(n[0].since, T0, "since when the unit went down");
    assert!(
        n[0].details[0].contains("systemd is restarting it"),
        "{:?}",
        n[0].details
    );
    // Open: nothing more until repeat_hours.
    assert!(m.observe(&k3s(failed()), T0 + 4 * MIN).is_empty());
    assert!(
        m.observe(&k3s(failed()), T0 + 3 * MIN + 12 * 3600 - 1)
            .is_empty()
    );
    let n = m.observe(&k3s(failed()), T0 + 3 * MIN + 12 * 3600);
    assert_eq!(phases(&n), vec![(EventKind::K3sDown, Phase::Repeat)]);
    // Unknown (D-Bus failed) changes nothing.
    assert!(
        m.observe(&Observation::default(), T0 + 13 * 3600)
            .is_empty()
    );
    let n = m.observe(&k3s(K3sHealth::Ready), T0 + 13 * 3600);
    assert_eq!(phases(&n), vec![(EventKind::K3sDown, Phase::Resolved)]);
    assert_eq!(n[0].since, T0);
    assert!(m.state().open.is_empty() && m.state().pending.is_empty());
}

#[test]
fn a_short_outage_sends_nothing() {
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    let down = K3sHealth::Down {
        since: 0,
        cause: DownCause::NotReady("503".into()),
    };
    assert!(m.observe(&k3s(down.clone()), T0).is_empty());
    assert!(m.observe(&k3s(down), T0 + 2 * MIN).is_empty());
    assert!(
        m.observe(&k3s(K3sHealth::Ready), T0 + 2 * MIN + 30)
            .is_empty()
    );
    assert!(m.state().pending.is_empty());
}

#[test]
fn stopped_on_purpose_sends_nothing() {
    for how in [OnPurpose::Disabled, OnPurpose::StoppedByJob] {
        let mut m = Monitor::new(limits(), Some(MonitorState::default()));
        for t in 0..100 {
            let n = m.observe(&k3s(K3sHealth::OnPurpose { how }), T0 + t * MIN);
            assert!(n.is_empty(), "{how:?}: {n:?}");
        }
        assert_eq!(m.state(), &MonitorState::default());
    }
    // And a stop on purpose resolves an open outage.
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    m.observe(&k3s(failed()), T0 + 10 * MIN);
    let n = m.observe(
        &k3s(K3sHealth::OnPurpose {
            how: OnPurpose::StoppedByJob,
        }),
        T0 + 11 * MIN,
    );
    assert_eq!(phases(&n), vec![(EventKind::K3sDown, Phase::Resolved)]);
}

#[test]
fn open_events_survive_a_restart_without_resending() {
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    m.observe(&k3s(failed()), T0 + 5 * MIN);
    let saved: MonitorState =
        serde_json::from_str(&serde_json::to_string(m.state()).unwrap()).unwrap();
    let mut again = Monitor::new(limits(), Some(saved));
    assert!(again.observe(&k3s(failed()), T0 + 6 * MIN).is_empty());
    let n = again.observe(&k3s(K3sHealth::Ready), T0 + 7 * MIN);
    assert_eq!(phases(&n), vec![(EventKind::K3sDown, Phase::Resolved)]);
}

fn start(boot: &str, clean: Option<&str>) -> StartFacts {
    StartFacts {
        boot_id: boot.into(),
        booted_at: T0,
        clean_stop_boot: clean.map(str::to_string),
        watchdog_reset: Some("the watchdog reset the machine (a hang) (bootstatus 0x20)".into()),
        under_voltage: true,
    }
}

#[test]
fn unclean_restart_is_sent_once() {
    // First start ever: nothing to compare with.
    let mut m = Monitor::new(limits(), None);
    assert!(m.start(&start("boot-a", None), T0).is_empty());
    // Same boot, daemon restarted: not a node restart.
    assert!(m.start(&start("boot-a", None), T0 + 10).is_empty());
    // New boot, and boot-a left no clean-stop marker.
    let n = m.start(&start("boot-b", None), T0 + 100);
    assert_eq!(phases(&n), vec![(EventKind::UncleanRestart, Phase::Firing)]);
    let text = n[0].details.join(" ");
    assert!(text.contains("watchdog reset"), "{text}");
    assert!(text.contains("power supply is the likely cause"), "{text}");
    // The daemon restarts within boot-b: once only.
    assert!(m.start(&start("boot-b", None), T0 + 200).is_empty());
    // A clean shutdown of boot-b, then boot-c: nothing.
    assert!(
        m.start(&start("boot-c", Some("boot-b")), T0 + 300)
            .is_empty()
    );
}

#[test]
fn pipeline_silent_fires_after_its_threshold_and_not_while_not_applicable() {
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    let obs = |p| Observation {
        pipeline: Some(p),
        ..Default::default()
    };
    assert!(m.observe(&obs(PipelineHealth::Seen), T0).is_empty());
    let missing = || PipelineHealth::Missing("no Watchdog".into());
    assert!(m.observe(&obs(missing()), T0 + MIN).is_empty());
    assert!(m.observe(&obs(missing()), T0 + 15 * MIN).is_empty());
    // Rolling out: the clock starts again afterwards.
    assert!(
        m.observe(
            &obs(PipelineHealth::NotApplicable("rolling out".into())),
            T0 + 16 * MIN
        )
        .is_empty()
    );
    assert!(m.observe(&obs(missing()), T0 + 17 * MIN).is_empty());
    assert!(m.observe(&obs(missing()), T0 + 31 * MIN).is_empty());
    let n = m.observe(&obs(missing()), T0 + 32 * MIN);
    assert_eq!(phases(&n), vec![(EventKind::PipelineDead, Phase::Firing)]);
    let n = m.observe(&obs(PipelineHealth::Seen), T0 + 40 * MIN);
    assert_eq!(phases(&n), vec![(EventKind::PipelineDead, Phase::Resolved)]);
}

#[test]
fn stage_failures_open_and_resolve_per_stage() {
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    let stages = |names: &[&str]| Observation {
        failed_stages: Some(
            names
                .iter()
                .map(|n| FailedStage {
                    name: n.to_string(),
                    detail: "job failed".into(),
                })
                .collect(),
        ),
        ..Default::default()
    };
    let n = m.observe(&stages(&["loki", "falco"]), T0);
    assert_eq!(n.len(), 2);
    assert!(
        n.iter()
            .all(|n| n.kind == EventKind::StageFailed && n.phase == Phase::Firing)
    );
    assert!(m.observe(&stages(&["loki", "falco"]), T0 + MIN).is_empty());
    let n = m.observe(&stages(&["falco"]), T0 + 2 * MIN);
    assert_eq!(phases(&n), vec![(EventKind::StageFailed, Phase::Resolved)]);
    assert_eq!(n[0].subject, "loki");
}

#[test]
fn rollback_and_power_are_sent_once() {
    let mut m = Monitor::new(limits(), Some(MonitorState::default()));
    let rb = Rollback {
        key: "2026-12-01T03:00:00Z/abc".into(),
        at: T0,
        reason: "/readyz answered 500".into(),
        kept_in: "/var/lib/sightline/rejected/abc".into(),
    };
    let power = PowerSeen {
        boot_id: "boot-a".into(),
        occurred: vec!["Under-voltage detected".into()],
    };
    let o = Observation {
        rollback: Some(rb.clone()),
        power: Some(power.clone()),
        ..Default::default()
    };
    let n = m.observe(&o, T0 + 1);
    assert_eq!(
        phases(&n),
        vec![
            (EventKind::K3sRolledBack, Phase::Firing),
            (EventKind::PowerTrouble, Phase::Firing)
        ]
    );
    assert!(
        n[0].details
            .join(" ")
            .contains("/var/lib/sightline/rejected/abc")
    );
    assert!(m.observe(&o, T0 + 2).is_empty());
    // Next boot: power again.
    let o2 = Observation {
        power: Some(PowerSeen {
            boot_id: "boot-b".into(),
            ..power
        }),
        ..o
    };
    assert_eq!(
        phases(&m.observe(&o2, T0 + 3)),
        vec![(EventKind::PowerTrouble, Phase::Firing)]
    );
}

#[test]
fn a_rollback_older_than_the_first_start_is_not_news() {
    let mut m = Monitor::new(limits(), None);
    let o = Observation {
        rollback: Some(Rollback {
            key: "old".into(),
            at: T0,
            reason: "x".into(),
            kept_in: "y".into(),
        }),
        ..Default::default()
    };
    assert!(m.observe(&o, T0).is_empty());
}
