//! `sightline uninstall` against the stand-in API server: every stage
//! pruned through the rollout's prune before the host files go, and the
//! record of what could not be pruned kept for a later run.

mod common;

use std::path::Path;

use common::kubefake::KubeFake;
use common::*;

const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests/sightline";
const METRICS: &str = "/run/node_exporter/textfile_collector/sightline.prom";

fn setup() -> (tempfile::TempDir, KubeFake) {
    let root = fixture("pi4");
    let fake = KubeFake::start(root.path());
    write(
        root.path(),
        "/etc/sightline/config.toml",
        &format!(
            "[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\n[rollout]\naddon_timeout_seconds = 3\njob_timeout_seconds = 3\nworkloads_timeout_seconds = 2\nprune_timeout_seconds = 5\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
    let out = sightline(root.path(), &["apply", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!stage_files(root.path()).is_empty());
    assert!(!fake.live_objects().is_empty());
    (root, fake)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The files in sightline's manifests directory (none once it is gone).
fn stage_files(root: &Path) -> Vec<String> {
    let dir = root.join(MANIFESTS);
    if !dir.exists() {
        return Vec::new();
    }
    snapshot(&dir)
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// The stage records in state.json (none when the state is gone).
fn recorded_stages(root: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(root.join("var/lib/sightline/state.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["stages"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn uninstall_prunes_every_stage_then_removes_the_host_files() {
    let (root, fake) = setup();
    let r = root.path();
    let files = stage_files(r);
    assert!(r.join(METRICS.trim_start_matches('/')).exists());

    // The dry run lists the stage files and the metrics file, and writes nothing.
    let before = snapshot(r);
    let preview = ok(r, &["uninstall", "--dry-run"]);
    for f in &files {
        assert!(preview.contains(f.as_str()), "{f} missing from:\n{preview}");
    }
    assert!(preview.contains(METRICS), "{preview}");
    assert_eq!(snapshot(r), before, "the dry run wrote something");

    let out = sightline(r, &["uninstall", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pruned {} stage(s)", files.len())),
        "{}",
        text(&out)
    );
    assert_eq!(stage_files(r), Vec::<String>::new(), "stage files left");
    assert_eq!(
        fake.live_objects(),
        Default::default(),
        "stage objects left"
    );
    assert_eq!(recorded_stages(r), Vec::<String>::new());
    assert!(
        !r.join(METRICS.trim_start_matches('/')).exists(),
        "sightline.prom left"
    );
    // With its own metrics gone first, the textfile directory sightline
    // created is empty and goes too.
    assert!(
        !r.join("run/node_exporter/textfile_collector").exists(),
        "{}",
        text(&out)
    );
    // The host half ran too: the audit policy sightline wrote is gone.
    assert!(!r.join("etc/rancher/k3s/audit-policy.yaml").exists());
}

#[test]
fn with_the_api_down_the_stage_files_and_their_record_stay_until_a_later_uninstall() {
    let (root, fake) = setup();
    let r = root.path();
    let files = stage_files(r);
    let recorded = recorded_stages(r);
    fake.with(|s| s.down = true);
    let out = sightline(r, &["uninstall", "--no-restart"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("the k3s API does not answer"), "{log}");
    for f in &files {
        assert!(log.contains(f.as_str()), "{f} not named:\n{log}");
    }
    assert_eq!(
        stage_files(r),
        files,
        "stage files changed while k3s was down"
    );
    assert_eq!(
        recorded_stages(r),
        recorded,
        "the record of the stages was lost"
    );
    assert!(!fake.live_objects().is_empty());

    fake.with(|s| s.down = false);
    let out = sightline(r, &["uninstall", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stage_files(r), Vec::<String>::new());
    assert_eq!(fake.live_objects(), Default::default());
    assert_eq!(recorded_stages(r), Vec::<String>::new());
}

#[test]
fn keep_cluster_leaves_the_stages_and_their_record() {
    let (root, fake) = setup();
    let r = root.path();
    let files = stage_files(r);
    let out = sightline(
        r,
        &["-o", "json", "uninstall", "--no-restart", "--keep-cluster"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cluster"]["result"], "kept_on_request", "{v}");
    assert_eq!(v["cluster"]["files"].as_array().unwrap().len(), files.len());
    assert_eq!(stage_files(r), files);
    assert!(!recorded_stages(r).is_empty());
    assert!(!fake.live_objects().is_empty());
}
