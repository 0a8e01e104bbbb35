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
    numbered(&std::fs::read_to_string(&log).unwrap())
}

/// A failpoint log as `name@n`, n counting the hits of each name.
fn numbered(log: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    log.lines()
        .map(|name| {
            let n = seen.entry(name.to_string()).or_default();
            *n += 1;
            format!("{name}@{n}")
        })
        .collect()
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
        records: records(root, &["files", "dirs", "pending_effects"]),
    }
}

/// The state's records under `keys`.
fn records(root: &Path, keys: &[&str]) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&read(root, "/var/lib/sightline/state.json")).unwrap();
    keys.iter()
        .map(|k| (k.to_string(), state[*k].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".sightline-tmp."))
        })
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
        let after = snapshot(r);
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, v)| !p.starts_with("run") && before.get(*p) != Some(v))
            .map(|(p, _)| p.clone())
            .collect();
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

const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests/sightline";

/// A 8 GB Pi 4 (room for both tiers) whose sightline talks to `fake`.
fn cluster_root() -> (tempfile::TempDir, KubeFake) {
    let root = fixture("pi4");
    write(
        root.path(),
        "/proc/meminfo",
        "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
    );
    let fake = KubeFake::start(root.path());
    (root, fake)
}

fn set_tier(root: &Path, fake: &KubeFake, tier: &str) {
    write(
        root,
        "/etc/sightline/config.toml",
        &format!(
            "tier = \"{tier}\"\n[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\n[rollout]\naddon_timeout_seconds = 5\njob_timeout_seconds = 5\nworkloads_timeout_seconds = 3\nprune_timeout_seconds = 5\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
}

fn full_apply(root: &Path, failpoint: Option<&str>, log: Option<&Path>) -> Output {
    run_args(root, &["apply", "--no-restart"], failpoint, log)
}

/// What an uninterrupted rollout leaves: the stage files (content and
/// mode), and the state's records of host files, directories, owed effects
/// and stages.
fn rollout_outcome(root: &Path) -> Outcome {
    let files = snapshot(&root.join(MANIFESTS)).into_iter().collect();
    Outcome {
        files,
        records: records(root, &["files", "dirs", "pending_effects", "stages"]),
    }
}

/// The points a rollout passes that the sweep kills at: the `rollout.*`
/// points of the first and of the last stage written and pruned, and the
/// points inside the atomic write of the first stage file and of the first
/// emptied one. Every stage goes through the same code, and one point costs
/// three full applies (seconds each against the stand-in), so the other
/// stages' points are swept only with `SIGHTLINE_KILLPOINTS_ALL=1`. The
/// atomic write's points are swept at every durable write by the host
/// sweep above.
fn rollout_points(log: &str) -> Vec<String> {
    let all = numbered(log);
    let every = std::env::var("SIGHTLINE_KILLPOINTS_ALL").as_deref() == Ok("1");
    let last = |name: &str| {
        all.iter()
            .rfind(|p| p.starts_with(&format!("{name}@")))
            .cloned()
    };
    let lasts: Vec<String> = [
        "rollout.write.before",
        "rollout.write.after",
        "rollout.prune.empty.before",
        "rollout.prune.empty.after",
        "rollout.prune.remove.before",
        "rollout.prune.remove.after",
    ]
    .into_iter()
    .filter_map(last)
    .collect();
    let mut out = Vec::new();
    let mut follow = 0;
    for p in &all {
        if p.starts_with("rollout.") {
            if every || p.ends_with("@1") || lasts.contains(p) {
                out.push(p.clone());
            }
            follow = if p == "rollout.write.before@1" || p == "rollout.prune.empty.before@1" {
                3
            } else {
                0
            };
        } else if p.starts_with("atomic.") && follow > 0 {
            out.push(p.clone());
            follow -= 1;
        }
    }
    out
}

/// Every path under `root` whose content or mode differs from `before`,
/// outside /run (status and metrics, on tmpfs).
fn written_since(root: &Path, before: &BTreeMap<PathBuf, (Vec<u8>, u32)>) -> Vec<PathBuf> {
    let after = snapshot(root);
    after
        .iter()
        .filter(|(p, v)| !p.starts_with("run") && before.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .chain(
            before
                .keys()
                .filter(|p| !p.starts_with("run") && !after.contains_key(*p))
                .cloned(),
        )
        .collect()
}

/// The kill-point sweep of the rollout: a full `apply` (host layer, then
/// the stages through the stand-in API of tests/common/kubefake.rs) on an
/// 8 GB Pi 4 whose tier flips between full and light, so each apply writes
/// the other tier's stage files and prunes the stages it no longer has.
/// sightline is SIGKILLed at every rollout point of both directions; after
/// each, the next apply must converge to what an uninterrupted one leaves
/// (exactly the desired stage files, no temp file, intent settled, the
/// same records), and a further apply must write nothing.
#[test]
fn every_kill_point_of_a_rollout_is_recovered_by_the_next_apply() {
    let (root, fake) = cluster_root();
    let r = root.path();
    let logs = tempfile::tempdir().unwrap();
    let check = |what: &str, out: &Output| {
        assert!(
            out.status.success(),
            "{what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set_tier(r, &fake, "light");
    check("first apply", &full_apply(r, None, None));
    // One uninterrupted apply each way: the points passed and the outcome.
    let mut want = BTreeMap::new();
    let mut points = BTreeMap::new();
    for tier in ["full", "light"] {
        set_tier(r, &fake, tier);
        let log = logs.path().join(tier);
        check(tier, &full_apply(r, None, Some(&log)));
        let p = rollout_points(&std::fs::read_to_string(&log).unwrap());
        assert!(
            p.iter().any(|p| p.starts_with("rollout.write."))
                && p.iter().any(|p| p.starts_with("rollout.prune."))
                && p.iter().any(|p| p.starts_with("atomic.")),
            "{tier}: the apply neither wrote, pruned nor wrote atomically: {p:?}"
        );
        points.insert(tier, p);
        want.insert(tier, rollout_outcome(r));
    }
    assert_ne!(want["full"], want["light"]);
    // Now light: alternate the directions so that each killed apply starts
    // from the other tier, converged.
    let mut at = "light";
    let mut swept = 0;
    let mut queue: BTreeMap<&str, std::collections::VecDeque<String>> = points
        .iter()
        .map(|(t, p)| (*t, p.iter().cloned().collect()))
        .collect();
    while queue.values().any(|q| !q.is_empty()) {
        let to = if at == "light" { "full" } else { "light" };
        set_tier(r, &fake, to);
        let Some(point) = queue.get_mut(to).unwrap().pop_front() else {
            check(&format!("to {to}"), &full_apply(r, None, None));
            at = to;
            continue;
        };
        let point = format!("{point} (to {to})");
        let fp = point.split(' ').next().unwrap();
        let killed = full_apply(r, Some(fp), None);
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "{point}: not killed there: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        check(
            &format!("{point}: the next apply"),
            &full_apply(r, None, None),
        );
        assert_eq!(
            temp_files(r),
            Vec::<PathBuf>::new(),
            "{point}: temp files left"
        );
        for j in ["intent.json", "k3s-journal.json"] {
            assert!(
                !r.join("var/lib/sightline").join(j).exists(),
                "{point}: {j} not settled"
            );
        }
        assert_eq!(
            rollout_outcome(r),
            want[to],
            "{point}: differs from an uninterrupted apply"
        );
        let before = snapshot(r);
        check(
            &format!("{point}: a further apply"),
            &full_apply(r, None, None),
        );
        assert_eq!(
            written_since(r, &before),
            Vec::<PathBuf>::new(),
            "{point}: a further apply wrote"
        );
        at = to;
        swept += 1;
    }
    println!("kill-point sweep (rollout, no systemd): {swept} points swept");
}
