//! Helpers shared by the integration tests: scratch copies of fixture
//! roots, running the real binary, and snapshots of a root's files.

#![allow(dead_code)]

pub mod httprec;
pub mod kubefake;
pub mod pki;
pub mod rollout_sweep;
pub mod smtp;

pub mod nspawn;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `tests/fixtures/roots/NAME` into a fresh temp dir and installs the
/// packaged units, as the .deb would.
pub fn fixture(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("tests/fixtures/roots").join(name), d.path());
    let units = d.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for u in [
        "sightline.service",
        "sightline-throttle.service",
        "sightline-throttle.timer",
    ] {
        std::fs::copy(repo().join("units").join(u), units.join(u)).unwrap();
    }
    d
}

/// Recursive copy keeping modes.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Runs `sightline --root ROOT ARGS...` with a clean environment.
pub fn sightline(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("SIGHTLINE_LOG", "info")
        .output()
        .expect("running sightline")
}

/// Runs and asserts success, returning stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = sightline(root, args);
    assert!(
        out.status.success(),
        "sightline {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `detect --json` for a root.
pub fn detect(root: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(root, &["detect", "--json"])).unwrap()
}

/// Every file under a root: content and mode.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().to_path_buf();
        if m.is_dir() {
            out.insert(rel.join(""), (Vec::new(), m.permissions().mode() & 0o7777));
            walk(base, &p, out);
        } else {
            out.insert(
                rel,
                (
                    std::fs::read(&p).unwrap_or_default(),
                    m.permissions().mode() & 0o7777,
                ),
            );
        }
    }
}

/// The paths whose content or mode differ between two snapshots, added
/// and removed ones included, outside `run` (status and metrics, on tmpfs).
pub fn changed_paths(
    before: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    after: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
) -> Vec<PathBuf> {
    let keys: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|p| !p.starts_with("run") && before.get(*p) != after.get(*p))
        .cloned()
        .collect()
}

/// Whether a path is one of sightline's temp files (`src/atomic.rs`).
pub fn is_temp_file(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".sightline-tmp."))
}

/// The records of a root's state.json under `keys`.
pub fn state_records(root: &Path, keys: &[&str]) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&read(root, "/var/lib/sightline/state.json")).unwrap();
    keys.iter()
        .map(|k| (k.to_string(), state[*k].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Mode bits of a host path under a root.
pub fn mode(root: &Path, host: &str) -> u32 {
    std::fs::metadata(root.join(host.trim_start_matches('/')))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Content of a host path under a root.
pub fn read(root: &Path, host: &str) -> String {
    std::fs::read_to_string(root.join(host.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{host}: {e}"))
}

/// Writes a host file under a root.
pub fn write(root: &Path, host: &str, content: &str) {
    let p = root.join(host.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// True when an external validator is installed. When it is missing the
/// test fails, unless SIGHTLINE_ALLOW_MISSING_TOOLS=1 (then it says so loudly
/// and the caller skips the external check only).
pub fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    available(found, &format!("{name} is not installed"))
}

/// The one policy for missing external validators: fail with `why`, unless
/// SIGHTLINE_ALLOW_MISSING_TOOLS=1, where the check is skipped loudly.
pub fn available(found: bool, why: &str) -> bool {
    if !found {
        if std::env::var("SIGHTLINE_ALLOW_MISSING_TOOLS").as_deref() == Ok("1") {
            eprintln!("!!!!! {why}: SKIPPING this check (SIGHTLINE_ALLOW_MISSING_TOOLS=1) !!!!!");
        } else {
            panic!(
                "{why}; run scripts/test-deps (or set SIGHTLINE_ALLOW_MISSING_TOOLS=1 to skip external checks)"
            );
        }
    }
    found
}

/// The stage files of a 4 GB Pi 4 (light tier, Falco, kube-router's
/// NetworkPolicies), in order.
pub const LIGHT_PI4_STAGES: [&str; 14] = [
    "sightline-10-namespaces.yaml",
    "sightline-12-netpol-light.yaml",
    "sightline-15-secrets.yaml",
    "sightline-18-prometheus-crds.yaml",
    "sightline-20-loki.yaml",
    "sightline-30-fluent-bit.yaml",
    "sightline-40-victoria-metrics.yaml",
    "sightline-50-falco.yaml",
    "sightline-60-trivy-operator.yaml",
    "sightline-80-kube-bench.yaml",
    "sightline-90-alert-rules.yaml",
    "sightline-90-watchdog-alert.yaml",
    "sightline-91-loki-rules.yaml",
    "sightline-95-uptime-kuma.yaml",
];
