//! The staged rollout over HTTPS against a stand-in API server that
//! requires the client certificate and behaves like k3s's deploy controller
//! and helm-controller on the real manifests directory.

mod common;

use std::path::Path;

use common::kubefake::{KubeFake, Reject};
use common::*;

const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests/sightline";

fn setup(fixture_name: &str, extra: &str) -> (tempfile::TempDir, KubeFake) {
    let root = fixture(fixture_name);
    let fake = KubeFake::start(root.path());
    write(
        root.path(),
        "/etc/sightline/config.toml",
        &format!(
            "{extra}\n[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\n[rollout]\naddon_timeout_seconds = 3\njob_timeout_seconds = 3\nworkloads_timeout_seconds = 2\nprune_timeout_seconds = 5\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
    (root, fake)
}

fn stage_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(MANIFESTS))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn apply(root: &Path) -> (Option<i32>, String) {
    let out = sightline(root, &["apply", "--no-restart"]);
    (
        out.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_stage_is_written_in_order_and_becomes_healthy() {
    let (root, fake) = setup("pi4", "");
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    // Exactly the light tier's stages of a 4 GB Pi, and no temp file.
    let files = stage_files(root.path());
    assert_eq!(files, LIGHT_PI4_STAGES);
    assert!(log.contains("all ") && log.contains("healthy"), "{log}");
    // The stage holding Secrets is 0600.
    assert_eq!(
        mode(
            root.path(),
            &format!("/{MANIFESTS}/sightline-15-secrets.yaml")
        ),
        0o600
    );
    // Each Addon was checked before the next stage's file existed: the fake
    // logs every request, so the first check of stage N+1's Addon comes
    // after the last check of stage N's.
    let reqs = fake.with(|s| s.requests.clone());
    let first = |name: &str| {
        reqs.iter()
            .position(|r| r.ends_with(&format!("/addons/{name}")))
            .unwrap_or(usize::MAX)
    };
    let order: Vec<usize> = files
        .iter()
        .map(|f| first(f.trim_end_matches(".yaml")))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "stages checked out of order: {order:?}"
    );
    // A second apply writes nothing and only checks.
    let before = snapshot(&root.path().join(MANIFESTS));
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(snapshot(&root.path().join(MANIFESTS)), before);
    let status = ok(root.path(), &["status"]);
    assert!(
        status.contains("uptime-kuma") && status.contains("healthy"),
        "{status}"
    );
    let prom = read(
        root.path(),
        "/run/node_exporter/textfile_collector/sightline.prom",
    );
    assert!(
        prom.contains("sightline_stage_healthy{stage=\"loki\"} 1"),
        "{prom}"
    );
}

#[test]
fn a_stage_k3s_refuses_is_reported_and_nothing_after_it_is_written() {
    let (root, fake) = setup("pi4", "");
    fake.with(|s| {
        s.reject.insert(
            "sightline-20-loki".into(),
            Reject::always(
                "error parsing sightline-20-loki.yaml: unknown field \"spec.valuesContnt\"",
            ),
        )
    });
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("stage loki failed")
            && log.contains("ApplyManifestFailed")
            && log.contains("valuesContnt"),
        "{log}"
    );
    let files = stage_files(root.path());
    assert!(files.contains(&"sightline-20-loki.yaml".to_string()));
    assert!(
        files.iter().all(|f| f.as_str() <= "sightline-20-loki.yaml"),
        "later stages written: {files:?}"
    );
    let status = ok_or_err(root.path(), &["status"]);
    assert!(
        status.contains("failed") && status.contains("loki"),
        "{status}"
    );
    // k3s retried the file on every scan; sightline failed only at the
    // Addon gate's timeout, with the last event.
    assert!(log.contains("after retrying for 3 s"), "{log}");
    let attempts = fake.with(|s| s.attempts.get("sightline-20-loki").copied());
    assert!(attempts > Some(2), "retried: {attempts:?}");
}

fn ok_or_err(root: &Path, args: &[&str]) -> String {
    let out = sightline(root, args);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_failed_install_job_is_reported_with_its_reason() {
    let (root, fake) = setup("pi4", "");
    fake.with(|s| s.failing_jobs.insert("fluent-bit".into()));
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("stage fluent-bit failed")
            && log.contains("BackoffLimitExceeded")
            && log.contains("terminated Error"),
        "{log}"
    );
    assert!(
        !stage_files(root.path())
            .iter()
            .any(|f| f.starts_with("sightline-40")),
        "metrics stage must wait"
    );
}

#[test]
fn a_stage_that_never_gets_ready_times_out_and_blocks_the_next() {
    let (root, fake) = setup("pi4", "");
    fake.with(|s| {
        s.unready
            .insert("statefulset/logging/loki".into(), "ImagePullBackOff".into())
    });
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("timed out")
            && log.contains("ImagePullBackOff")
            && log.contains("statefulset/logging/loki"),
        "{log}"
    );
    let files = stage_files(root.path());
    assert_eq!(
        files.last().map(String::as_str),
        Some("sightline-20-loki.yaml"),
        "nothing after loki: {files:?}"
    );
    // Once the pod recovers, the next apply continues where it stopped.
    fake.with(|s| s.unready.clear());
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(stage_files(root.path()).contains(&"sightline-95-uptime-kuma.yaml".to_string()));
}

#[test]
fn a_tier_switch_prunes_the_stages_that_no_longer_apply() {
    let (root, fake) = setup("pi4", "tier = \"full\"");
    // An 8 GB Pi: on 4 GB the full tier's requests do not fit and are refused.
    write(
        root.path(),
        "/proc/meminfo",
        "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
    );
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(
        stage_files(root.path()).contains(&"sightline-40-kube-prometheus-stack.yaml".to_string())
    );
    let cfg = read(root.path(), "/etc/sightline/config.toml")
        .replace("tier = \"full\"", "tier = \"light\"");
    write(root.path(), "/etc/sightline/config.toml", &cfg);
    let plan = ok(root.path(), &["plan"]);
    assert!(
        plan.contains("prune     sightline-40-kube-prometheus-stack.yaml"),
        "{plan}"
    );
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    let files = stage_files(root.path());
    for gone in [
        "sightline-30-alloy.yaml",
        "sightline-40-kube-prometheus-stack.yaml",
        "sightline-70-kubescape.yaml",
        "sightline-12-netpol-full.yaml",
    ] {
        assert!(
            !files.contains(&gone.to_string()),
            "{gone} still there: {files:?}"
        );
        assert!(
            log.contains(&format!(
                "{} ",
                gone.trim_start_matches("sightline-")
                    .trim_end_matches(".yaml")
                    .split_once('-')
                    .unwrap()
                    .1
            )),
            "{log}"
        );
    }
    for new in [
        "sightline-30-fluent-bit.yaml",
        "sightline-40-victoria-metrics.yaml",
        "sightline-18-prometheus-crds.yaml",
    ] {
        assert!(files.contains(&new.to_string()), "{new} missing: {files:?}");
    }
    assert!(log.contains("pruned"), "{log}");
    // The HelmChart was waited for until its deletion finished.
    let reqs = fake.with(|s| s.requests.clone());
    let kps_reads = reqs
        .iter()
        .filter(|r| r.ends_with("/helmcharts/kube-prometheus-stack"))
        .count();
    assert!(
        kps_reads >= 3,
        "prune polled the HelmChart until it was gone ({kps_reads} reads)"
    );
    let state: serde_json::Value =
        serde_json::from_str(&read(root.path(), "/var/lib/sightline/state.json")).unwrap();
    assert!(state["stages"].get("kube-prometheus-stack").is_none());
}

#[test]
fn an_unreachable_api_leaves_the_cluster_pending_with_exit_3() {
    let (root, fake) = setup("pi4", "");
    fake.with(|s| s.down = true);
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(3), "{log}");
    assert!(
        log.contains("pending") && log.contains("host layer is done"),
        "{log}"
    );
    assert!(
        stage_files(root.path()).is_empty(),
        "nothing written while k3s is down"
    );
    // --no-restart skips only the restart, not the rollout.
    fake.with(|s| s.down = false);
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn without_k3s_or_on_an_agent_the_cluster_is_skipped_and_says_why() {
    for (name, why) in [("nok3s", "k3s is not installed"), ("agent", "agent node")] {
        let root = fixture(name);
        let out = ok(root.path(), &["apply", "--no-restart"]);
        assert!(
            out.contains("cluster") && out.contains("skipped") && out.contains(why),
            "{name}: {out}"
        );
        assert!(!root.path().join(MANIFESTS).exists(), "{name}");
    }
}

#[test]
fn host_only_leaves_the_cluster_alone() {
    let (root, fake) = setup("pi4", "");
    let out = ok(root.path(), &["apply", "--no-restart", "--host-only"]);
    assert!(out.contains("--host-only"), "{out}");
    assert!(stage_files(root.path()).is_empty());
    assert!(fake.with(|s| s.requests.is_empty()), "no API call at all");
}

#[test]
fn the_api_requires_the_client_certificate() {
    let root = fixture("pi4");
    let fake = KubeFake::start(root.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = root.path().join("var/lib/rancher/k3s/server/tls");
    let ca = std::fs::read(tls.join("server-ca.crt")).unwrap();
    let good = sightline::k3s::K3sApi::new(
        &fake.url,
        &ca,
        &std::fs::read(tls.join("client-admin.crt")).unwrap(),
        &std::fs::read(tls.join("client-admin.key")).unwrap(),
    )
    .unwrap();
    rt.block_on(async { good.readyz().await.unwrap() });
    // A certificate from another CA is refused during the handshake.
    let other = tempfile::tempdir().unwrap();
    common::kubefake::pki(other.path());
    let otls = other.path().join("var/lib/rancher/k3s/server/tls");
    let bad = sightline::k3s::K3sApi::new(
        &fake.url,
        &ca,
        &std::fs::read(otls.join("client-admin.crt")).unwrap(),
        &std::fs::read(otls.join("client-admin.key")).unwrap(),
    )
    .unwrap();
    let err = rt.block_on(async { bad.readyz().await.unwrap_err() });
    assert!(err.contains("does not answer"), "{err}");
    // And a server not signed by k3s's CA is not trusted.
    let wrong_ca = std::fs::read(otls.join("server-ca.crt")).unwrap();
    let untrusting = sightline::k3s::K3sApi::new(
        &fake.url,
        &wrong_ca,
        &std::fs::read(tls.join("client-admin.crt")).unwrap(),
        &std::fs::read(tls.join("client-admin.key")).unwrap(),
    )
    .unwrap();
    assert!(rt.block_on(async { untrusting.readyz().await.is_err() }));
}

#[test]
fn airgapped_charts_are_copied_for_k3s_to_serve() {
    let (root, _fake) = setup("pi4", "[bundle]\nairgap_charts_dir = \"/srv/charts\"");
    let idx: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("files/bundle/index.toml")).unwrap())
            .unwrap();
    let mut archives = Vec::new();
    for (_, c) in idx["charts"].as_table().unwrap() {
        let name = format!(
            "{}-{}.tgz",
            c["chart"].as_str().unwrap(),
            c["version"].as_str().unwrap()
        );
        write(
            root.path(),
            &format!("/srv/charts/{name}"),
            &format!("chart archive {name}"),
        );
        archives.push(name);
    }
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    for a in &archives {
        assert_eq!(
            read(
                root.path(),
                &format!("/var/lib/rancher/k3s/server/static/charts/{a}")
            ),
            format!("chart archive {a}"),
            "{a} copied"
        );
    }
    let loki = read(root.path(), &format!("/{MANIFESTS}/sightline-20-loki.yaml"));
    assert!(
        loki.contains("https://%{KUBERNETES_API}%/static/charts/loki-"),
        "{loki}"
    );
}

/// The HelmChart document of a stage file.
fn helmchart_of(root: &Path, file: &str) -> serde_json::Value {
    let text = read(root, &format!("/{MANIFESTS}/{file}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == "HelmChart")
        .unwrap_or_else(|| panic!("no HelmChart in {file}"))
}

#[test]
fn a_fixed_chart_is_not_failed_by_the_condition_left_from_the_old_job() {
    let (root, fake) = setup("pi4", "");
    fake.with(|s| s.failing_jobs.insert("loki".into()));
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("stage loki failed"), "{log}");
    // The user fixes the values; the next install job succeeds. Until
    // helm-controller has replaced the failed job, the HelmChart still says
    // Failed=True (chart.go), which is about the old job.
    fake.with(|s| s.failing_jobs.clear());
    write(
        root.path(),
        "/etc/sightline/values.d/loki.yaml",
        "loki:\n  auth_enabled: false\n  limits_config:\n    max_query_series: 1000\n",
    );
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("replace install job helm-install-loki"),
        "the gate waited for the replacement: {log}"
    );
}

#[test]
fn a_labels_only_change_does_not_wait_for_a_new_install_job() {
    let (root, fake) = setup("pi4", "");
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    let file = root.path().join(MANIFESTS).join("sightline-20-loki.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace(
        "\"sightline.dev/stage\": \"loki\"",
        "\"sightline.dev/stage\": \"edited\"",
    );
    assert_ne!(text, edited, "the label is in the file");
    std::fs::write(&file, edited).unwrap();
    let job_before = fake.with(|s| s.requests.len());
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "restored");
    assert!(
        !log.contains("replace install job"),
        "helm-controller keeps the job for the same spec: {log}"
    );
    assert!(fake.with(|s| s.requests.len()) > job_before);
}

#[test]
fn k3s_retries_a_refused_file_and_the_stage_waits_instead_of_failing() {
    let (root, fake) = setup("pi4", "");
    // What k3s reports while a CRD the file uses is not yet discovered.
    fake.with(|s| {
        s.reject.insert(
            "sightline-20-loki".into(),
            Reject::for_scans(
                4,
                "failed to create logging/loki-rules monitoring.coreos.com/v1, Kind=PrometheusRule for  kube-system/sightline-20-loki: no matches for kind \"PrometheusRule\" in version \"monitoring.coreos.com/v1\"",
            ),
        )
    });
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("retrying: k3s could not apply the file (ApplyManifestFailed)"),
        "{log}"
    );
    let attempts = fake.with(|s| s.attempts.get("sightline-20-loki").copied());
    assert!(attempts >= Some(5), "k3s applied it again: {attempts:?}");
}

#[test]
fn an_old_k3s_gets_the_host_layer_but_no_cluster_stages() {
    for (version, minimum, why) in [
        ("v1.21.4+k3s1", "v1.22.10", "checksum"),
        ("v1.23.6+k3s1", "v1.23.7", "emptied"),
    ] {
        let (root, fake) = setup("pi4", "");
        fake.with(|s| s.version = version.into());
        let (code, log) = apply(root.path());
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains(version) && log.contains(minimum) && log.contains(why),
            "{version}: {log}"
        );
        assert!(
            stage_files(root.path()).is_empty(),
            "{version}: nothing written"
        );
        assert!(
            root.path()
                .join("etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml")
                .exists(),
            "{version}: the host layer is applied"
        );
    }
}

#[test]
fn stateful_charts_abort_instead_of_reinstalling_after_a_failed_upgrade() {
    let root = fixture("pi4");
    // Room for the full tier too: a 4 GB Pi would refuse it.
    write(
        root.path(),
        "/proc/meminfo",
        "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
    );
    for tier in ["full", "light"] {
        let out = root.path().join(format!("out-{tier}"));
        ok(
            root.path(),
            &["render", "--tier", tier, "--out", out.to_str().unwrap()],
        );
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let Some(hc) = serde_yaml_ng::Deserializer::from_str(&text)
                .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
                .find(|d| d["kind"] == "HelmChart")
            else {
                continue;
            };
            let chart = hc["metadata"]["name"].as_str().unwrap();
            let stateful = [
                "loki",
                "kube-prometheus-stack",
                "victoria-metrics-k8s-stack",
            ]
            .contains(&chart);
            assert_eq!(
                hc["spec"]["failurePolicy"].as_str(),
                stateful.then_some("abort"),
                "{tier} {chart}"
            );
        }
    }
    // And k3s accepts it (the CRD's enum): a full rollout is healthy.
    let (root, _fake) = setup("pi4", "");
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        helmchart_of(root.path(), "sightline-20-loki.yaml")["spec"]["failurePolicy"],
        "abort"
    );
}

/// k3s's deploy controller never applies a file with a `.skip` beside it
/// (`pkg/deploy/controller.go`), so waiting for its Addon would only end in
/// a timeout: the stage fails at once and says why.
#[test]
fn a_stage_k3s_is_told_to_skip_fails_at_once_with_the_reason() {
    let (root, _fake) = setup("pi4", "");
    write(
        root.path(),
        &format!("/{MANIFESTS}/sightline-10-namespaces.yaml.skip"),
        "",
    );
    let start = std::time::Instant::now();
    let (code, log) = apply(root.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("k3s is told to skip this file"), "{log}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "waited for a timeout: {log}"
    );
    assert!(
        !root
            .path()
            .join(MANIFESTS)
            .join("sightline-10-namespaces.yaml")
            .exists(),
        "nothing written for a skipped stage"
    );
}
