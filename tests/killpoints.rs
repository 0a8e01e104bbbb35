//! The kill-point sweep without systemd (bootupd's model): for every
//! failpoint an `apply` passes on a scratch root, a fresh copy of the
//! fixture is converged with sightline SIGKILLed at that point, then
//! `apply` runs again. After each point the host must hold the complete new
//! configuration, the intent record must be settled, no temp file may be
//! left, the state must record what an uninterrupted run records (backups,
//! created directories, owed effects), and a further apply must be a no-op.
//! The same sweep under a real systemd, with k3s restarts, is in
//! `systemd_nspawn.rs`. Needs `--features failpoints`.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kubefake::KubeFake;
use common::rollout_sweep;
use common::*;

fn run(root: &Path, failpoint: Option<&str>, log: Option<&Path>) -> Output {
    run_args(root, &["apply", "--host-only"], failpoint, log)
}

fn run_args(root: &Path, args: &[&str], failpoint: Option<&str>, log: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sightline"));
    c.arg("--root").arg(root).args(args);
    c.env_remove("SIGHTLINE_FAILPOINT")
        .env_remove("SIGHTLINE_FAILPOINT_LOG");
    if let Some(f) = failpoint {
        c.env("SIGHTLINE_FAILPOINT", f);
    }
    if let Some(l) = log {
        c.env("SIGHTLINE_FAILPOINT_LOG", l);
    }
    c.output().unwrap()
}

/// Every `name@n` an uninterrupted apply passes, in order.
fn points(fixture_name: &str) -> Vec<String> {
    let root = fixture(fixture_name);
    let log = root.path().join("points.log");
    let out = run(root.path(), None, Some(&log));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rollout_sweep::numbered(&std::fs::read_to_string(&log).unwrap())
}

/// The host as an uninterrupted run leaves it: files outside sightline's
/// run and state directories, and the state's records.
#[derive(Debug, PartialEq)]
struct Outcome {
    files: BTreeMap<PathBuf, (Vec<u8>, u32)>,
    records: serde_json::Value,
}

fn outcome(root: &Path) -> Outcome {
    let files = snapshot(root)
        .into_iter()
        .filter(|(p, _)| {
            !p.starts_with("run") && !p.ends_with("state.json") && !p.ends_with("points.log")
        })
        .collect();
    Outcome {
        files,
        records: state_records(root, &["files", "dirs", "pending_effects"]),
    }
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| is_temp_file(p))
        .collect()
}

fn sweep(fixture_name: &str) -> usize {
    let reference = fixture(fixture_name);
    assert!(run(reference.path(), None, None).status.success());
    let want = outcome(reference.path());
    let points = points(fixture_name);
    assert!(points.len() > 10, "too few failpoints reached: {points:?}");
    for point in &points {
        let root = fixture(fixture_name);
        let r = root.path();
        let killed = run(r, Some(point), None);
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "{point}: not killed there: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        let next = run(r, None, None);
        assert!(
            next.status.success(),
            "{point}: the next apply failed: {}",
            String::from_utf8_lossy(&next.stderr)
        );
        assert_eq!(
            temp_files(r),
            Vec::<PathBuf>::new(),
            "{point}: temp files left"
        );
        assert!(
            !r.join("var/lib/sightline/intent.json").exists(),
            "{point}: intent not settled"
        );
        assert_eq!(
            outcome(r),
            want,
            "{point}: differs from an uninterrupted run"
        );
        let before = snapshot(r);
        let again = run(r, None, None);
        assert!(again.status.success());
        let changed = changed_paths(&before, &snapshot(r));
        assert!(
            changed.is_empty(),
            "{point}: second apply wrote {changed:?}"
        );
    }
    points.len()
}

#[test]
fn every_kill_point_of_a_host_apply_is_recovered_by_the_next_apply() {
    let mut total = 0;
    for f in ["ubuntu-cilium", "pi4"] {
        let n = sweep(f);
        println!("kill-point sweep ({f}, no systemd): {n} points swept");
        total += n;
    }
    println!("kill-point sweep (no systemd): {total} points swept in all");
}

/// A scratch root for the rollout sweep: an 8 GB Pi 4 (room for both
/// tiers), applied with `--no-restart` (there is no systemd).
struct PlainNode {
    root: tempfile::TempDir,
    logs: tempfile::TempDir,
}

impl rollout_sweep::Node for PlainNode {
    fn root(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    fn apply(&self, failpoint: Option<&str>, log: bool) -> Output {
        let log = log.then(|| self.logs.path().join("points.log"));
        run_args(
            self.root.path(),
            &["apply", "--no-restart"],
            failpoint,
            log.as_deref(),
        )
    }

    fn take_log(&self) -> String {
        let log = self.logs.path().join("points.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text
    }

    fn watched(&self) -> Vec<PathBuf> {
        vec![PathBuf::new()]
    }

    fn settled(&self, _point: &str) {}
}

/// The rollout's kill points without systemd (tests/common/rollout_sweep.rs);
/// the same sweep under systemd 252 is in `systemd_nspawn.rs`.
#[test]
fn every_kill_point_of_a_rollout_is_recovered_by_the_next_apply() {
    let swept = rollout_sweep::sweep(8, || {
        let root = fixture("pi4");
        write(
            root.path(),
            "/proc/meminfo",
            "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
        );
        let fake = KubeFake::start(root.path());
        let logs = tempfile::tempdir().unwrap();
        (PlainNode { root, logs }, fake)
    });
    println!("{}", swept.report("no systemd"));
}
