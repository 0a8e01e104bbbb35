//! Never lose the user's data (issue 10, engine half): the bundle is checked
//! before the host is touched, uninstall removes only what sightline
//! recorded, originals survive a half-failed apply, and an interrupted
//! converge is finished from its intent record.

mod common;

use std::path::Path;

use common::*;

fn status(root: &Path) -> serde_json::Value {
    serde_json::from_str(&read(root, "/run/sightline/status.json")).unwrap()
}

/// Everything under the root but sightline's run directory (status.json).
fn host_files(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, (Vec<u8>, u32)> {
    let mut all = snapshot(root);
    all.retain(|p, _| !p.starts_with("run"));
    all
}

#[test]
fn a_tampered_bundle_is_refused_before_the_host_is_touched() {
    let root = fixture("pi4");
    let r = root.path();
    let tar = tempfile::tempdir().unwrap();
    ok(
        r,
        &["bundle", "export", "--out", tar.path().to_str().unwrap()],
    );
    let mut data = std::fs::read(tar.path().join("bundle.tar")).unwrap();
    let at = data
        .windows(16)
        .position(|w| w == b"name: monitoring")
        .unwrap();
    data[at + 6] = b'M';
    write(r, "/usr/share/sightline/bundle.tar", "");
    std::fs::write(r.join("usr/share/sightline/bundle.tar"), &data).unwrap();
    let before = host_files(r);
    let out = sightline(r, &["apply", "--no-restart"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bundle is refused"), "{err}");
    let after = host_files(r);
    assert!(
        after == before,
        "host touched: {:?}",
        after
            .keys()
            .filter(|p| after.get(*p) != before.get(*p))
            .collect::<Vec<_>>()
    );
    let s = status(r);
    assert_eq!(s["last_converge"]["ok"], false, "{s}");
    assert!(
        s["last_converge"]["error"]
            .as_str()
            .unwrap()
            .contains("bundle is refused"),
        "{s}"
    );
}

#[test]
fn only_a_directory_sightline_created_gets_its_mode_changed() {
    let root = fixture("pi4");
    let r = root.path();
    // The log directory exists already, made by someone else.
    std::fs::create_dir_all(r.join("srv/logs")).unwrap();
    std::fs::set_permissions(
        r.join("srv/logs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    write(
        r,
        "/etc/sightline/config.toml",
        "[audit]\nlog_path = \"/srv/logs/audit.log\"\n",
    );
    let out = ok(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(mode(r, "/srv/logs"), 0o755, "{out}");
    assert!(out.contains("/srv/logs has mode 0755"), "{out}");
    // A directory sightline created is kept at its mode.
    std::fs::remove_dir_all(r.join("srv/logs")).unwrap();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(mode(r, "/srv/logs"), 0o700);
    std::fs::set_permissions(
        r.join("srv/logs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(mode(r, "/srv/logs"), 0o700, "drift repaired");
}

#[test]
fn a_converged_apply_writes_nothing_in_the_state_directory() {
    let root = fixture("pi4");
    let r = root.path();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    let dir = r.join("var/lib/sightline");
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (
            std::os::unix::fs::MetadataExt::mtime_nsec(&m),
            std::os::unix::fs::MetadataExt::mtime(&m),
        )
    };
    let before = (host_files(r), stamp(&dir));
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(r, &["apply", "--no-restart", "--host-only"]);
    // The directory's mtime moves with any file created or removed in it
    // (an intent record written and deleted, say).
    assert_eq!((host_files(r), stamp(&dir)), before);
}

/// A bundle file is hashed once per version of it: after it verified, a
/// re-check costs a stat; once it changes it is verified again, and a
/// tampered one is refused although an earlier version passed.
#[test]
fn a_bundle_tampered_after_it_verified_is_refused_again() {
    let root = fixture("pi4");
    let r = root.path();
    let tar = tempfile::tempdir().unwrap();
    ok(
        r,
        &["bundle", "export", "--out", tar.path().to_str().unwrap()],
    );
    let good = std::fs::read(tar.path().join("bundle.tar")).unwrap();
    write(r, "/usr/share/sightline/bundle.tar", "");
    std::fs::write(r.join("usr/share/sightline/bundle.tar"), &good).unwrap();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    assert!(r.join("run/sightline/bundle-verified").is_file());
    let mut bad = good.clone();
    let at = bad
        .windows(16)
        .position(|w| w == b"name: monitoring")
        .unwrap();
    bad[at + 6] = b'M';
    // Same size: only the identity (inode, mtime) tells it changed.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(r.join("usr/share/sightline/bundle.tar"), &bad).unwrap();
    let out = sightline(r, &["apply", "--no-restart", "--host-only"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bundle is refused"), "{err}");
}
