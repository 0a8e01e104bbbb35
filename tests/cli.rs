//! The command line as a Unix citizen: one output convention (`-o json` on
//! every reporting command), quiet end on a closed pipe, documented exit
//! codes, review commands that write nothing, and `--version`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sightline"));
    c.env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    c
}

fn json_of(root: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = sightline(root, &all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sightline -o json {args:?}: stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_reporting_command_speaks_json() {
    let root = fixture("pi4");
    let r = root.path();
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path().to_str().unwrap();
    // Read-only first, then the ones that change the root, then status.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["detect"], "arch"),
        (vec!["config"], "config"),
        (vec!["config", "--check"], "valid"),
        (vec!["plan", "--host-only"], "host"),
        (vec!["render"], "stages"),
        (vec!["render", "--out", s], "stages"),
        (vec!["bundle", "export", "--out", s], "digest"),
        (vec!["uninstall", "--dry-run"], "host"),
        (vec!["apply", "--no-restart", "--host-only"], "host"),
        (vec!["status"], "stages"),
        (vec!["uninstall", "--no-restart"], "cluster"),
    ];
    for (args, key) in cases {
        let (code, v) = json_of(r, &args);
        assert!(matches!(code, Some(0 | 4)), "{args:?} exited {code:?}: {v}");
        assert!(v.get(key).is_some(), "{args:?}: no {key:?} in {v}");
    }
    let tar = format!("{s}/bundle.tar");
    let (code, v) = json_of(r, &["bundle", "verify", &tar]);
    assert_eq!(code, Some(0));
    assert_eq!(v["ok"], true, "{v}");
    // `bundle export --out -` writes the same archive to stdout.
    let streamed = sightline(r, &["bundle", "export", "--out", "-"]);
    assert!(streamed.status.success());
    assert_eq!(streamed.stdout, std::fs::read(&tar).unwrap());
    // `--json` is the same as `-o json`, before or after the command.
    let a = ok(r, &["detect", "--json"]);
    let b = ok(r, &["--json", "detect"]);
    let c = ok(r, &["-o", "json", "detect"]);
    assert_eq!(a, c);
    assert_eq!(b, c);
}

/// `sightline render | head -1`: the reader goes away after one line.
fn with_closed_stdout(root: &Path, args: &[&str]) -> Output {
    let mut child = bin()
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The reader is dropped here, as `head` exits.
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let root = fixture("pi4");
    for args in [&["render"][..], &["config"], &["-o", "json", "render"]] {
        let out = with_closed_stdout(root.path(), args);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}\n{err}",
            out.status
        );
        assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    }
}

#[test]
fn render_writes_no_host_state_and_says_where_the_password_comes_from() {
    let root = fixture("pi4");
    let r = root.path();
    let before = snapshot(r);
    let out = sightline(r, &["render"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(r), before, "render wrote under the root");
    assert!(
        stderr(&out).contains("one-off password that is not kept"),
        "{}",
        stderr(&out)
    );
    // Once the cluster pass stored one, render uses it, and says so.
    write(
        r,
        "/var/lib/sightline/secrets/grafana-admin-password",
        "stored-by-apply\n",
    );
    let stored = read(r, "/var/lib/sightline/secrets/grafana-admin-password");
    let out = sightline(r, &["render"]);
    assert!(
        stderr(&out)
            .contains("password stored in /var/lib/sightline/secrets/grafana-admin-password"),
        "{}",
        stderr(&out)
    );
    let (_, v) = json_of(r, &["render"]);
    assert_eq!(v["grafana_admin_password"], "stored");
    assert_eq!(
        read(r, "/var/lib/sightline/secrets/grafana-admin-password"),
        stored
    );
}

#[test]
fn status_exits_4_while_a_stage_is_not_healthy() {
    let root = fixture("pi4");
    let r = root.path();
    let fake = common::kubefake::KubeFake::start(r);
    write(
        r,
        "/etc/sightline/config.toml",
        &format!(
            "[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\n[rollout]\naddon_timeout_seconds = 2\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
    fake.with(|s| {
        s.reject.insert(
            "sightline-20-loki".into(),
            common::kubefake::Reject::always("error parsing sightline-20-loki.yaml"),
        )
    });
    let out = sightline(r, &["apply", "--no-restart"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = sightline(r, &["status"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));
    let (code, v) = json_of(r, &["status"]);
    assert_eq!(code, Some(4), "{v}");
    // Healthy again: 0, although `--no-restart` left effects listed.
    fake.with(|s| s.reject.clear());
    let out = sightline(r, &["apply", "--no-restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, v) = json_of(r, &["status"]);
    assert_eq!(code, Some(0), "{v}");
    assert!(!v["pending_effects"].as_array().unwrap().is_empty());
}

#[test]
fn version_names_the_commit_and_the_bundle() {
    let root = tempfile::tempdir().unwrap();
    let v = ok(root.path(), &["--version"]);
    let mut lines = v.lines();
    assert_eq!(
        lines.next(),
        Some(format!("sightline {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let commit = lines.next().unwrap_or_default();
    assert!(
        commit.starts_with("commit ") && commit.len() > "commit ".len(),
        "{v}"
    );
    let out = tempfile::tempdir().unwrap();
    let (_, exported) = json_of(
        root.path(),
        &["bundle", "export", "--out", out.path().to_str().unwrap()],
    );
    assert_eq!(
        lines.next().map(str::to_string),
        Some(format!("bundle {}", exported["digest"].as_str().unwrap())),
        "{v}"
    );
}

#[test]
fn hidden_commands_stay_out_of_completions_and_global_options_have_a_heading() {
    let root = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let c = ok(root.path(), &["completions", shell]);
        assert!(c.contains("collect-throttle"), "{shell}");
        assert!(
            !c.contains("manpage") && !c.contains("completions "),
            "{shell}:\n{c}"
        );
    }
    for cmd in [
        &["--help"][..],
        &["plan", "--help"],
        &["bundle", "verify", "--help"],
    ] {
        let help = ok(root.path(), cmd);
        let global = help.split("Global options:").nth(1).unwrap_or_default();
        for opt in ["--root", "--format", "--json", "--verbose", "--quiet"] {
            assert!(
                global.contains(opt),
                "{cmd:?}: {opt} not under Global options:\n{help}"
            );
        }
    }
}

#[test]
fn collect_throttle_prints_on_dash_and_takes_an_explicit_path_as_given() {
    let root = fixture("pi4");
    let r = root.path();
    let printed = ok(r, &["collect-throttle", "--output", "-"]);
    assert!(
        printed.contains("sightline_throttle") || printed.contains("# HELP"),
        "{printed}"
    );
    let cwd = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(cwd.path())
        .arg("--root")
        .arg(r)
        .args(["collect-throttle", "--output", "t.prom"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(cwd.path().join("t.prom")).unwrap(),
        printed
    );
    assert!(!r.join("t.prom").exists());
    // Without --output, [throttle] output is a host path under --root.
    ok(r, &["collect-throttle"]);
    assert_eq!(
        read(r, "/run/node_exporter/textfile_collector/rpi_throttle.prom"),
        printed
    );
}

#[test]
fn config_check_fails_with_the_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "/etc/sightline/config.toml",
        "[daemon]\nrecheck_interval_seconds = \"soon\"\n",
    );
    let out = sightline(root.path(), &["config", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("/etc/sightline/config.toml") && err.contains('2'),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    write(
        root.path(),
        "/etc/sightline/config.toml",
        "[daemon]\nrecheck_interval_seconds = 60\n",
    );
    let out = sightline(root.path(), &["config", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "config --check prints nothing on success"
    );
}

#[test]
fn quiet_and_verbose_set_what_is_logged() {
    let root = fixture("pi4");
    let run = |flags: &[&str], env: Option<&str>, cmd: &[&str]| {
        let mut c = bin();
        if let Some(e) = env {
            c.env("SIGHTLINE_LOG", e);
        }
        // A root that is not the running machine: facts log at debug that
        // they search its unit files.
        let out = c
            .arg("--root")
            .arg(root.path())
            .args(["--system-bus", "unix:path=/nonexistent"])
            .args(flags)
            .args(cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let detect = ["detect"];
    assert!(run(&["-v"], None, &detect).contains("DEBUG not the running machine's root"));
    assert!(!run(&[], None, &detect).contains("DEBUG"));
    // SIGHTLINE_LOG wins over -v, as documented.
    assert!(!run(&["-v"], Some("warn"), &detect).contains("DEBUG"));
    let apply = ["apply", "--no-restart", "--host-only"];
    assert!(!run(&["-q"], None, &apply).contains("INFO"));
    // The first apply wrote everything; undo it to see the same lines logged.
    ok(
        root.path(),
        &["uninstall", "--no-restart", "--keep-cluster"],
    );
    assert!(run(&[], None, &apply).contains("INFO wrote file"));
}

#[test]
fn render_by_a_user_who_cannot_read_the_password_names_the_file() {
    if !nix_is_root() {
        return;
    }
    let root = fixture("pi4");
    let r = root.path();
    write(
        r,
        "/var/lib/sightline/secrets/grafana-admin-password",
        "x\n",
    );
    // Only the store is closed to others, as StateDirectoryMode=0700 makes it.
    for (p, m) in [("", 0o755), ("var/lib/sightline", 0o700)] {
        std::fs::set_permissions(r.join(p), std::os::unix::fs::PermissionsExt::from_mode(m))
            .unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_sightline"))
        .arg("--root")
        .arg(r)
        .arg("render")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/var/lib/sightline/secrets/grafana-admin-password")
            && err.contains("sudo sightline render"),
        "{err}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
