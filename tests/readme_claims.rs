//! What README.md promises, each checked on a fake machine: a no-op writes
//! nothing, `config.yaml` is never edited, NetworkPolicies stay off on
//! Cilium unless forced, etcd scraping is off, the tier decision is kept
//! until `--redecide`, and the daemon re-checks on its interval and is quiet
//! in between.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn render_files(root: &Path) -> Vec<String> {
    let out = root.join("rendered");
    let _ = std::fs::remove_dir_all(&out);
    ok(root, &["render", "--out", out.to_str().unwrap()]);
    let mut v: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What strace saw one process do to the filesystem.
struct Trace {
    lines: Vec<String>,
}

impl Trace {
    fn run(root: &Path, args: &[&str]) -> Trace {
        let log = root.join("strace.log");
        let out = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&log)
            .args([
                "-e",
                "trace=openat,open,creat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,fchmod,fchmodat,truncate,ftruncate,fsync,fdatasync,sync_file_range,syncfs,sync",
            ])
            .arg(env!("CARGO_BIN_EXE_sightline"))
            .arg("--root")
            .arg(root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        std::fs::remove_file(&log).unwrap();
        Trace { lines }
    }

    /// Calls that flush to storage.
    fn syncs(&self) -> Vec<&String> {
        self.lines
            .iter()
            .filter(|l| {
                [
                    "fsync(",
                    "fdatasync(",
                    "sync_file_range(",
                    "syncfs(",
                    "sync(",
                ]
                .iter()
                .any(|c| l.contains(c))
            })
            .collect()
    }

    /// Paths the process created, opened for writing, renamed onto,
    /// removed or changed the mode of.
    fn written_paths(&self) -> Vec<String> {
        let mut v = Vec::new();
        for l in &self.lines {
            let writes = if l.contains("openat(") || l.contains("open(") {
                l.contains("O_WRONLY") || l.contains("O_RDWR") || l.contains("O_CREAT")
            } else {
                [
                    "rename",
                    "unlink",
                    "mkdir",
                    "fchmodat(",
                    "truncate(",
                    "creat(",
                ]
                .iter()
                .any(|c| l.contains(c))
            };
            if !writes || l.contains("= -1 ") {
                continue;
            }
            // Every quoted path in the call (rename names two).
            for (i, part) in l.split('"').enumerate() {
                if i % 2 == 1 && part.starts_with('/') {
                    v.push(part.to_string());
                }
            }
        }
        v
    }
}

/// A converge that changes nothing writes nothing to persistent storage and
/// calls no fsync. Only tmpfs (`/run`: status, metrics, the lock) is
/// written, and only what changed.
#[test]
fn a_no_op_apply_writes_nothing_and_never_fsyncs() {
    if !tool("strace") {
        return;
    }
    for name in ["pi4", "ubuntu-cilium"] {
        let d = fixture(name);
        let r = d.path();
        ok(r, &["apply", "--no-restart", "--host-only"]);
        let state_before = read(r, "/var/lib/sightline/state.json");
        let t = Trace::run(r, &["apply", "--no-restart", "--host-only"]);
        assert!(
            t.syncs().is_empty(),
            "{name}: a no-op fsynced: {:#?}",
            t.syncs()
        );
        let run = r.join("run");
        let outside: Vec<String> = t
            .written_paths()
            .into_iter()
            .filter(|p| !Path::new(p).starts_with(&run))
            .collect();
        assert!(
            outside.is_empty(),
            "{name}: a no-op wrote outside /run: {outside:#?}\n{}",
            t.lines.join("\n")
        );
        assert_eq!(read(r, "/var/lib/sightline/state.json"), state_before);
        // Sanity: the trace does see writes when there is something to do.
        write(r, "/etc/rancher/k3s/audit-policy.yaml", "edited\n");
        let t = Trace::run(r, &["apply", "--no-restart", "--host-only"]);
        assert!(
            t.written_paths()
                .iter()
                .any(|p| p.ends_with("audit-policy.yaml"))
                && !t.syncs().is_empty(),
            "{name}: the trace missed a real repair:\n{}",
            t.lines.join("\n")
        );
    }
}

#[test]
fn collect_throttle_never_fsyncs() {
    if !tool("strace") {
        return;
    }
    let d = fixture("pi4");
    // The first run creates the textfile directory (tmpfiles does on a
    // node); every later tick only replaces the file.
    ok(d.path(), &["collect-throttle"]);
    // The SoC warmed up: the sample changes, so the file is replaced.
    write(d.path(), "/sys/class/thermal/thermal_zone0/temp", "63500\n");
    let t = Trace::run(d.path(), &["collect-throttle"]);
    assert!(t.syncs().is_empty(), "{:#?}", t.syncs());
    assert!(
        t.written_paths()
            .iter()
            .any(|p| p.ends_with("rpi_throttle.prom")),
        "{}",
        t.lines.join("\n")
    );
}

#[test]
fn config_yaml_is_never_edited() {
    for name in ["ubuntu-cilium", "pi4"] {
        let d = fixture(name);
        let r = d.path();
        let cfg = "/etc/rancher/k3s/config.yaml";
        let before = std::fs::read(r.join(cfg.trim_start_matches('/'))).ok();
        ok(r, &["apply", "--no-restart", "--host-only"]);
        write(
            r,
            "/etc/sightline/config.d/50-test.toml",
            "[audit]\nmax_age_days = 3\n",
        );
        ok(r, &["apply", "--no-restart", "--host-only"]);
        ok(r, &["uninstall", "--no-restart"]);
        let after = std::fs::read(r.join(cfg.trim_start_matches('/'))).ok();
        assert_eq!(before, after, "{name}: {cfg} changed");
    }
}

#[test]
fn network_policies_are_off_on_cilium_unless_forced() {
    let d = fixture("ubuntu-cilium");
    let r = d.path();
    let auto = detect(r);
    assert_eq!(auto["cni"], "cilium");
    assert_eq!(auto["network_policies"], false, "{auto}");
    assert!(
        !render_files(r).iter().any(|f| f.contains("netpol")),
        "auto renders no NetworkPolicy stage on Cilium"
    );
    write(
        r,
        "/etc/sightline/config.d/50-np.toml",
        "[rollout]\nnetwork_policies = \"on\"\n",
    );
    let on = detect(r);
    assert_eq!(on["network_policies"], true, "{on}");
    assert!(render_files(r).iter().any(|f| f.contains("netpol")));
    // And on a CNI that enforces them, auto means on.
    let pi = fixture("pi4");
    assert_eq!(detect(pi.path())["network_policies"], true);
}

#[test]
fn etcd_scraping_is_off_by_default() {
    let d = fixture("ubuntu-cilium");
    let r = d.path();
    assert_eq!(detect(r)["tier"], "full");
    let out = r.join("rendered");
    render_files(r);
    let stack = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("kube-prometheus-stack"))
        .expect("a kube-prometheus-stack stage");
    let text = std::fs::read_to_string(stack).unwrap();
    let chart: serde_json::Value = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == "HelmChart")
        .unwrap();
    let values: serde_json::Value =
        serde_yaml_ng::from_str(chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(
        values["kubeEtcd"]["enabled"], false,
        "{}",
        values["kubeEtcd"]
    );
}

#[test]
fn the_tier_decision_is_kept_until_redecide() {
    let d = fixture("ubuntu-cilium");
    let r = d.path();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    let tier = || -> String {
        let s: serde_json::Value =
            serde_json::from_str(&read(r, "/var/lib/sightline/state.json")).unwrap();
        s["tier"]["tier"].as_str().unwrap().to_string()
    };
    assert_eq!(tier(), "full");
    // The stack now uses most of the memory.
    let meminfo = read(r, "/proc/meminfo")
        .replace("MemAvailable:   12582912 kB", "MemAvailable:    1048576 kB");
    write(r, "/proc/meminfo", &meminfo);
    ok(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(tier(), "full", "kept, not flipped by the stack's own use");
    assert_eq!(detect(r)["tier"], "full");
    ok(r, &["apply", "--no-restart", "--host-only", "--redecide"]);
    assert_eq!(tier(), "light", "measured again");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

fn start_daemon(root: &Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_sightline"))
            .arg("--root")
            .arg(root)
            .arg("run")
            .env_clear()
            .env("SIGHTLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn last_converge(root: &Path) -> Option<String> {
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("run/sightline/status.json")).ok()?,
    )
    .ok()?;
    s["last_converge"]["at"].as_str().map(String::from)
}

#[test]
fn the_daemon_rechecks_on_its_interval() {
    let d = fixture("pi4");
    let r = d.path();
    // The shortest interval the configuration accepts.
    write(
        r,
        "/etc/sightline/config.d/50-tick.toml",
        "[daemon]\nrecheck_interval_seconds = 10\n",
    );
    let _daemon = start_daemon(r);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut seen: Vec<(String, Instant)> = Vec::new();
    while Instant::now() < deadline && seen.len() < 2 {
        if let Some(at) = last_converge(r)
            && seen.last().is_none_or(|(last, _)| *last != at)
        {
            seen.push((at, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen.len(), 2, "re-checks seen: {seen:?}");
    let gap = seen[1].1 - seen[0].1;
    assert!(
        gap >= Duration::from_secs(9) && gap <= Duration::from_secs(13),
        "the re-check came {gap:?} after the first converge, not after the 10 s interval"
    );
}

fn context_switches(pid: u32) -> u64 {
    let mut n = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                n += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    n
}

#[test]
fn the_idle_daemon_does_not_wake_up() {
    let d = fixture("pi4");
    let r = d.path();
    let daemon = start_daemon(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_converge(r).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last_converge(r).is_some(), "the daemon never converged");
    // Let the first cluster pass (skipped here: no k3s API) settle.
    std::thread::sleep(Duration::from_secs(1));
    let pid = daemon.0.id();
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(5));
    let after = context_switches(pid);
    assert_eq!(after - before, 0, "wake-ups while idle");
}
