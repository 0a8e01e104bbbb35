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
