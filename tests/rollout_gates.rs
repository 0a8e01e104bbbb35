//! The pure gating logic on real shapes of Kubernetes and k3s JSON.

use serde_json::{Value, json};
use sightline::rollout::gates::{self, Gate};

fn fixture(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn items(name: &str) -> Vec<Value> {
    fixture(name)["items"].as_array().unwrap().clone()
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|i| i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn addon_checksum_gate() {
    let addons = items("addons.json");
    let loki = named(&addons, "sightline-20-loki");
    let sum = loki["spec"]["checksum"].as_str().unwrap();
    assert_eq!(
        gates::addon(Some(loki), &[], sum, "2026-08-20T09:00:00Z"),
        Gate::Ok
    );
    assert!(matches!(
        gates::addon(Some(loki), &[], "other", "2026-08-20T09:00:00Z"),
        Gate::Pending(_)
    ));
    assert!(
        matches!(gates::addon(None, &[], "other", ""), Gate::Pending(m) if m.contains("no Addon"))
    );
}

#[test]
fn addon_failure_event_explains_and_stale_events_do_not() {
    let addons = items("addons.json");
    let loki = named(&addons, "sightline-20-loki");
    let events = items("events-addon-failed.json");
    let failure = events
        .iter()
        .find(|e| e["type"] == "Warning")
        .expect("fixture has a warning event")
        .clone();
    let t = gates::event_time(&failure).to_string();
    // k3s retries a failed file on every scan: the event explains the wait
    // but does not end it.
    match gates::addon(Some(loki), &events, "new-sha", &t) {
        Gate::Retrying(m) => {
            assert!(m.contains(failure["reason"].as_str().unwrap()), "{m}");
            assert!(
                m.contains(&failure["message"].as_str().unwrap()[..20]),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Written after the failure: that event is about an older file.
    assert!(matches!(
        gates::addon(Some(loki), &events, "new-sha", "2999-01-01T00:00:00Z"),
        Gate::Pending(_)
    ));
}

#[test]
fn install_job_gate_on_complete_failed_and_replaced_jobs() {
    let charts = items("helmcharts.json");
    let hc = named(&charts, "loki");
    let jobs = items("jobs.json");
    let done = named(&jobs, "helm-install-loki");
    // The fixture job belongs to this HelmChart.
    let mut done = done.clone();
    done["metadata"]["ownerReferences"] = json!([{"uid": hc["metadata"]["uid"]}]);
    assert_eq!(
        gates::install_job(Some(hc), Some(&done), &[], None),
        Gate::Ok
    );
    // The same job object is the pre-change one: not enough.
    let uid = done["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        matches!(gates::install_job(Some(hc), Some(&done), &[], Some(&uid)), Gate::Pending(m) if m.contains("replace"))
    );
    let mut failed = named(&jobs, "helm-install-falco").clone();
    failed["metadata"]["ownerReferences"] = json!([{"uid": hc["metadata"]["uid"]}]);
    let pods = vec![
        json!({"metadata": {"name": "helm-install-falco-x"}, "status": {"containerStatuses": [
        {"name": "helm", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}),
    ];
    match gates::install_job(Some(hc), Some(&failed), &pods, None) {
        Gate::Failed(m) => assert!(
            m.contains("BackoffLimitExceeded") && m.contains("terminated Error (exit 1)"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        gates::install_job(Some(hc), None, &[], None),
        Gate::Pending(_)
    ));
    assert!(matches!(
        gates::install_job(None, None, &[], None),
        Gate::Pending(_)
    ));
    // A Failed condition that is not about a Job holds whatever Job exists.
    let mut hc_unsupported = hc.clone();
    hc_unsupported["status"]["conditions"] = json!([{"type": "Failed", "status": "True",
        "reason": "Unsupported version", "message": "Only Helm v3 charts are supported"}]);
    assert!(
        matches!(gates::install_job(Some(&hc_unsupported), None, &[], None), Gate::Failed(m) if m.contains("Only Helm v3"))
    );
}

#[test]
fn a_failed_condition_left_from_the_old_job_is_stale() {
    // helm-controller (chart.go OnChange, v0.17.6+) keeps Failed=True with
    // reason "Job failed" until it has replaced the failed Job, and a
    // HelmChart has no observedGeneration: the Job's uid decides.
    let charts = items("helmcharts.json");
    let jobs = items("jobs.json");
    let mut hc = named(&charts, "loki").clone();
    hc["status"]["conditions"][1] = json!({"type": "Failed", "status": "True", "reason": "Job failed",
        "message": "Job has reached configured number of retries without succeeding"});
    let mut old = named(&jobs, "helm-install-falco").clone();
    old["metadata"]["ownerReferences"] = json!([{"uid": hc["metadata"]["uid"]}]);
    let old_uid = old["metadata"]["uid"].as_str().unwrap().to_string();
    match gates::install_job(Some(&hc), Some(&old), &[], Some(&old_uid)) {
        Gate::Pending(m) => assert!(m.contains("replace") && m.contains("old job"), "{m}"),
        other => panic!("the old job's failure is not the new spec's: {other:?}"),
    }
    // Between the delete and the create there is no Job at all.
    assert!(matches!(
        gates::install_job(Some(&hc), None, &[], Some(&old_uid)),
        Gate::Pending(_)
    ));
    // The replacement runs while the status still says Failed: it counts.
    let mut new = named(&jobs, "helm-install-loki").clone();
    new["metadata"]["ownerReferences"] = json!([{"uid": hc["metadata"]["uid"]}]);
    assert_eq!(
        gates::install_job(Some(&hc), Some(&new), &[], Some(&old_uid)),
        Gate::Ok
    );
    let mut running = new.clone();
    running["status"] = json!({"active": 1});
    assert!(matches!(
        gates::install_job(Some(&hc), Some(&running), &[], Some(&old_uid)),
        Gate::Pending(m) if m.contains("running")
    ));
    // The new Job failing is final.
    let mut failed = old.clone();
    failed["metadata"]["uid"] = json!("a-new-uid");
    assert!(matches!(
        gates::install_job(Some(&hc), Some(&failed), &[], Some(&old_uid)),
        Gate::Failed(m) if m.contains("BackoffLimitExceeded")
    ));
}

#[test]
fn workloads_ready_or_not() {
    for (file, ready, unready) in [
        ("deployments.json", "kps-operator", "kps-grafana"),
        ("daemonsets.json", "alloy", "falco"),
        ("statefulsets.json", "loki", "prometheus-kps-prometheus"),
    ] {
        let list = items(file);
        let kind = file.trim_end_matches("s.json");
        assert_eq!(
            gates::workload(kind, Some(named(&list, ready))),
            Gate::Ok,
            "{file} {ready}"
        );
        assert!(
            matches!(
                gates::workload(kind, Some(named(&list, unready))),
                Gate::Pending(_)
            ),
            "{file} {unready}"
        );
        assert!(
            matches!(gates::workload(kind, None), Gate::Pending(m) if m.contains("not created"))
        );
    }
    // A controller that has not observed the latest generation is not ready,
    // whatever its counters say.
    let mut stale = named(&items("deployments.json"), "kps-operator").clone();
    stale["metadata"]["generation"] = json!(5);
    assert!(
        matches!(gates::workload("deployment", Some(&stale)), Gate::Pending(m) if m.contains("generation 5"))
    );
}

#[test]
fn pod_waiting_reasons_are_reported() {
    let pods = items("pods.json");
    let p = gates::pod_problems(&pods);
    assert!(p.iter().any(|x| x.contains("ImagePullBackOff")), "{p:?}");
}

#[test]
fn addon_checksum_is_the_sha256_of_the_file_k3s_applied() {
    use sha2::{Digest, Sha256};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube");
    let sha = |f: &str| hex::encode(Sha256::digest(std::fs::read(dir.join(f)).unwrap()));
    let addons = items("addons.json");
    for (addon, file) in [
        (
            "sightline-10-namespaces",
            "stage-sightline-10-namespaces.yaml",
        ),
        ("sightline-20-loki", "stage-sightline-20-loki.yaml"),
    ] {
        assert_eq!(
            gates::addon(Some(named(&addons, addon)), &[], &sha(file), ""),
            Gate::Ok,
            "{file}"
        );
    }
    // The later, rejected edit keeps the old checksum, and the event says why.
    let events = items("events-addon-failed.json");
    let bad = sha("stage-sightline-20-loki-bad.yaml");
    match gates::addon(
        Some(named(&addons, "sightline-20-loki")),
        &events,
        &bad,
        "2026-08-20T09:00:00Z",
    ) {
        Gate::Retrying(m) => assert!(
            m.contains("ApplyManifestFailed") || m.contains("ValidateManifestFailed"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}
