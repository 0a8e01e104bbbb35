//! Issue 10, input half: bad input never leaves a half-written file or a
//! broken k3s. Each test here failed before its fix.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const POLICY: &str = "/etc/rancher/k3s/audit-policy.yaml";
const WATCHDOG: &str = "/etc/systemd/system.conf.d/60-sightline-watchdog.conf";
const APPLY: &[&str] = &["apply", "--no-restart", "--host-only"];

fn stderr_of(r: &Path, args: &[&str]) -> String {
    let out = sightline(r, args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path setting that may not be is refused at its file:line with the
/// fix, before anything is written.
#[test]
fn dangerous_paths_are_refused_at_their_line_and_nothing_is_written() {
    let cases = [
        ("[paths]\nstate_dir = \"/\"\n", "system directory"),
        (
            "[paths]\nstate_dir = \"/srv/sightline\"\n",
            "under /var/lib",
        ),
        (
            "[paths]\nstate_dir = \"/var/lib/rancher\"\n",
            "belongs to k3s",
        ),
        (
            "[paths]\nk3s_audit_dropin = \"/etc/rancher/k3s/config.yaml\"\n",
            "k3s's own config file",
        ),
        (
            "[paths]\nk3s_audit_dropin = \"/etc/rancher/k3s/audit-policy.yaml\"\n",
            "also the value of paths.audit_policy",
        ),
        (
            "[audit]\nlog_path = \"/etc/k3s-audit.log\"\n",
            "system directory /etc",
        ),
        ("[bundle]\nvalues_dir = \"/usr\"\n", "system directory"),
    ];
    for (toml, says) in cases {
        let root = fixture("pi4");
        let r = root.path();
        write(r, "/etc/sightline/config.toml", toml);
        let before = snapshot(r);
        let err = stderr_of(r, APPLY);
        assert!(
            err.contains("/etc/sightline/config.toml:2:1") && err.contains(says),
            "{toml}: {err}"
        );
        assert!(err.contains("fix:"), "{err}");
        assert_eq!(snapshot(r), before, "{toml}: nothing may be written");
    }
}

/// A directory that was there before sightline keeps its mode: only a
/// directory sightline created is made 0700.
#[test]
fn an_existing_log_directory_keeps_its_mode() {
    let root = fixture("pi4");
    let r = root.path();
    let dir = r.join("var/log/k3s");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(r, APPLY);
    assert_eq!(mode(r, "/var/log/k3s"), 0o755);
    assert_eq!(mode(r, POLICY), 0o600, "the apply itself went through");
}

/// `ln -s /tmp/elsewhere ROOT/etc/rancher` once made apply write the audit
/// policy outside the root. The link is followed inside the root, as
/// `openat2(RESOLVE_IN_ROOT)` would.
#[test]
fn an_absolute_symlink_never_leads_out_of_the_root() {
    let root = fixture("pi4");
    let r = root.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = std::fs::canonicalize(elsewhere.path()).unwrap();
    let rancher = r.join("etc/rancher");
    if rancher.exists() {
        std::fs::remove_dir_all(&rancher).unwrap();
    }
    symlink(&outside, &rancher).unwrap();
    ok(r, APPLY);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing may be written outside the root"
    );
    let inside = r
        .join(outside.strip_prefix("/").unwrap())
        .join("k3s/audit-policy.yaml");
    assert!(inside.is_file(), "{inside:?}");
}

/// A FIFO named as `policy_source` used to block sightline forever in
/// open(); it is refused at once, naming the file.
#[test]
fn a_fifo_policy_source_is_refused_without_hanging() {
    let root = fixture("pi4");
    let r = root.path();
    let fifo = r.join("etc/sightline/policy.yaml");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    write(
        r,
        "/etc/sightline/config.toml",
        "[audit]\npolicy_source = \"/etc/sightline/policy.yaml\"\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("--root")
        .arg(r)
        .args(APPLY)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("sightline hung on a FIFO policy_source");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/etc/sightline/policy.yaml") && err.contains("FIFO"),
        "{err}"
    );
}

/// A driver identity with newlines is escaped in the drop-in's comment, so
/// it cannot add `[Manager]` settings.
#[test]
fn a_watchdog_identity_cannot_inject_settings() {
    let root = fixture("pi4");
    let r = root.path();
    write(
        r,
        "/sys/class/watchdog/watchdog0/identity",
        "Broadcom BCM2835 Watchdog timer\n[Manager]\nRuntimeWatchdogSec=1s\nx\n",
    );
    ok(r, APPLY);
    let dropin = read(r, WATCHDOG);
    assert_eq!(
        dropin.lines().filter(|l| l.starts_with('[')).count(),
        1,
        "{dropin}"
    );
    assert_eq!(
        dropin
            .lines()
            .filter(|l| l.starts_with("RuntimeWatchdogSec="))
            .collect::<Vec<_>>(),
        ["RuntimeWatchdogSec=30s"],
        "{dropin}"
    );
}

/// A hardware maximum of 0 is unknown; 1 or 2 s is below the floor and the
/// watchdog is left unarmed, with the reason shown.
#[test]
fn a_tiny_watchdog_maximum_is_not_armed() {
    for (max, armed) in [("0", true), ("1", false), ("2", false), ("5", false)] {
        let root = fixture("pi4");
        let r = root.path();
        write(
            r,
            "/sys/class/watchdog/watchdog0/identity",
            "some watchdog\n",
        );
        write(r, "/sys/class/watchdog/watchdog0/max_timeout", max);
        let out = ok(r, APPLY);
        let written = r.join(WATCHDOG.trim_start_matches('/')).exists();
        assert_eq!(written, armed, "max_timeout {max}: {out}");
        if armed {
            assert!(read(r, WATCHDOG).contains("RuntimeWatchdogSec=30s"));
        } else {
            let plan = ok(r, &["plan"]);
            assert!(plan.contains("floor"), "max_timeout {max}: {plan}");
        }
    }
}

/// Parallel first runs each generated a Grafana admin password and the last
/// write won, so every run handed out its own. The first stored one wins.
#[test]
fn parallel_first_renders_agree_on_one_grafana_password() {
    const RUNS: usize = 6;
    let root = fixture("ubuntu-cilium");
    let r = root.path();
    // The cluster pass of `apply` generates and stores the password (render
    // only reads it); six first runs at once, with no k3s API, each reach it.
    let children: Vec<_> = (0..RUNS)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sightline"))
                .arg("--root")
                .arg(r)
                .args(["apply", "--no-restart"])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let outs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for o in &outs {
        ok(r, &["render", "--out", o.path().to_str().unwrap()]);
    }
    let leftovers: Vec<_> = std::fs::read_dir(r.join("var/lib/sightline/secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
    let stored = read(r, "/var/lib/sightline/secrets/grafana-admin-password");
    let secrets: Vec<String> = outs
        .iter()
        .map(|o| std::fs::read_to_string(o.path().join("sightline-15-secrets.yaml")).unwrap())
        .collect();
    for s in &secrets {
        assert_eq!(s, &secrets[0], "every run rendered the same Secret");
    }
    let stored = stored.trim();
    assert!(
        secrets[0].contains(stored) || secrets[0].contains(&base64_of(stored)),
        "the rendered Secret holds the stored password"
    );
    let leftovers = std::fs::read_dir(r.join("var/lib/sightline/secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        leftovers,
        ["grafana-admin-password", "uptime-kuma-admin-password"]
            .map(String::from)
            .into(),
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A get_throttled that is not text names the file it came from.
#[test]
fn a_non_utf8_throttle_word_names_its_file() {
    let root = fixture("pi4");
    let r = root.path();
    let file = "/sys/devices/platform/soc/soc:firmware/get_throttled";
    std::fs::write(r.join(file.trim_start_matches('/')), b"\xff\xfe\n").unwrap();
    let err = stderr_of(r, &["collect-throttle"]);
    assert!(err.contains(file) && err.contains("not UTF-8"), "{err}");
}

/// The throttle unit bounds its run: with no TimeoutStartSec a oneshot waits
/// forever (systemd's default for Type=oneshot is infinity), and a stuck
/// collector blocks every later tick. The bound leaves room for the two
/// vcgencmd calls of 5 s each.
#[test]
fn the_throttle_unit_has_a_start_timeout() {
    let unit = std::fs::read_to_string(repo().join("units/sightline-throttle.service")).unwrap();
    let secs: Vec<u64> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("TimeoutStartSec="))
        .map(|v| v.trim_end_matches('s').parse().unwrap())
        .collect();
    assert_eq!(secs.len(), 1, "{unit}");
    assert!((10..=120).contains(&secs[0]), "{secs:?}");
}

/// `Is a directory` alone said nothing about which file: the error names it.
#[test]
fn writing_onto_a_directory_names_the_file() {
    let root = fixture("ubuntu-cilium");
    let r = root.path();
    let out = tempfile::tempdir().unwrap();
    let blocker = out.path().join("sightline-10-namespaces.yaml");
    std::fs::create_dir(&blocker).unwrap();
    let dir = out.path().to_str().unwrap();
    let err = stderr_of(r, &["render", "--out", dir]);
    assert!(err.contains(blocker.to_str().unwrap()), "{err}");

    let tar = out.path().join("bundle.tar");
    std::fs::create_dir(&tar).unwrap();
    let err = stderr_of(r, &["bundle", "export", "--out", dir]);
    assert!(err.contains(tar.to_str().unwrap()), "{err}");
}

/// A values overlay with a YAML error names its file and line.
#[test]
fn a_broken_values_overlay_names_its_file() {
    let root = fixture("ubuntu-cilium");
    let r = root.path();
    write(r, "/etc/sightline/values.d/loki.yaml", "a: 1\nb: [\n");
    let out = tempfile::tempdir().unwrap();
    let err = stderr_of(r, &["render", "--out", out.path().to_str().unwrap()]);
    assert!(
        err.contains("loki.yaml in bundle.values_dir") && err.contains("line"),
        "{err}"
    );
}

/// k3s's config file as discovered (`K3S_CONFIG_FILE` here) is never a
/// managed file, though the config check only knows the default name.
#[test]
fn the_detected_k3s_config_file_is_never_replaced() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    write(
        r,
        "/etc/default/k3s",
        "K3S_CONFIG_FILE=\"/etc/k3s/cluster.yaml\"\n",
    );
    write(
        r,
        "/etc/k3s/cluster.yaml",
        "write-kubeconfig-mode: \"0600\"\n",
    );
    write(
        r,
        "/etc/sightline/config.toml",
        "[paths]\nk3s_audit_dropin = \"/etc/k3s/cluster.yaml\"\n",
    );
    let before = snapshot(r);
    let err = stderr_of(r, APPLY);
    assert!(
        err.contains("/etc/k3s/cluster.yaml is the config file k3s reads")
            && err.contains("paths.k3s_audit_dropin"),
        "{err}"
    );
    assert_eq!(snapshot(r), before, "nothing may be written");
}

/// `--root /.` or `--root /tmp/x/../..` is the host and gets the host's
/// checks: a user other than root may not apply. Runs as `nobody` through
/// setpriv; the check comes before anything is read or written.
#[test]
fn a_dotted_root_is_the_host() {
    // setpriv comes with util-linux, which scripts/test-deps installs.
    if !tool("setpriv") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        // Already not root: the plain command shows the same check.
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let dotted = format!("{}/../..", scratch.path().display());
    for root in ["/.", "//", dotted.as_str()] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_sightline"))
            .args(["--root", root, "apply", "--no-restart", "--host-only"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--root {root}: {err}");
        assert!(err.contains("must run as root"), "--root {root}: {err}");
    }
}
