//! sightline against a real systemd 252 in a container, with a stand-in
//! k3s that behaves like k3s where sightline touches it (Type=notify, reads
//! config.yaml.d and the audit policy, crash-loops on a bad one, serves
//! /readyz over TLS with client certificates).
//!
//! Needs root; prints `SKIPPED: ...` when containers cannot run here (set
//! SIGHTLINE_NSPAWN_REQUIRED=1 to fail instead).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::nspawn::{Container, Prepared, Rootfs, install_standin_k3s, show, wait_until};
use common::repo;
use sha2::{Digest, Sha256};

const POLICY: &str = "/etc/rancher/k3s/audit-policy.yaml";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml";
const STARTS: &str = "/var/lib/standin/starts.jsonl";
const BASE_CONFIG: &str = "[k3s]\nready_timeout_seconds = 30\n";

/// A container with systemd, the stand-in k3s, and sightline installed as
/// the package would install it.
fn prepare(hint: &str, config: &str) -> Option<Prepared> {
    let p = match Container::prepare(hint) {
        Ok(p) => p,
        Err(skip) => {
            skip.report();
            return None;
        }
    };
    install_standin_k3s(&p);
    p.install_file(env!("CARGO_BIN_EXE_sightline"), "/usr/bin/sightline", 0o755);
    for u in [
        "sightline.service",
        "sightline-throttle.service",
        "sightline-throttle.timer",
    ] {
        p.install_file(
            repo().join("units").join(u),
            &format!("/usr/lib/systemd/system/{u}"),
            0o644,
        );
    }
    p.install_file(
        repo().join("files/tmpfiles.d/sightline.conf"),
        "/usr/lib/tmpfiles.d/sightline.conf",
        0o644,
    );
    p.write_file(
        "/etc/sightline/config.toml",
        format!("{BASE_CONFIG}{config}"),
        0o644,
    );
    Some(p)
}

fn boot(hint: &str, config: &str) -> Option<Container> {
    let c = prepare(hint, config)?
        .boot()
        .unwrap_or_else(|s| panic!("{s}"));
    wait_until("k3s active", Duration::from_secs(30), || {
        active(&c, "k3s") == "active"
    });
    Some(c)
}

fn sightline(c: &Container, args: &[&str]) -> Output {
    let mut argv = vec!["sightline"];
    argv.extend_from_slice(args);
    c.command(&argv)
        .env("SIGHTLINE_LOG", "info")
        .output()
        .unwrap()
}

fn sightline_ok(c: &Container, args: &[&str]) -> String {
    let out = sightline(c, args);
    assert!(out.status.success(), "sightline {args:?}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn prop(c: &Container, unit: &str, p: &str) -> String {
    let out = c.exec(&["systemctl", "show", unit, "-p", p, "--value"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn active(c: &Container, unit: &str) -> String {
    prop(c, unit, "ActiveState")
}

fn ok_starts(c: &Container) -> Vec<serde_json::Value> {
    c.read_file(STARTS)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["ok"] == true)
        .collect()
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn builtin_policy() -> String {
    std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap()
}

#[test]
fn first_apply_restarts_k3s_once_and_a_second_restarts_nothing() {
    let Some(c) = boot("first-apply", "") else {
        return;
    };
    let before = prop(&c, "k3s", "InvocationID");
    let starts_before = ok_starts(&c).len();
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(
        out.contains("restart k3s.service and wait for /readyz: done"),
        "{out}"
    );
    let after = prop(&c, "k3s", "InvocationID");
    assert_ne!(before, after, "k3s was restarted");
    let starts = ok_starts(&c);
    assert_eq!(starts.len(), starts_before + 1, "exactly one restart");
    let last = starts.last().unwrap();
    assert_eq!(
        last["audit_policy_sha256"],
        sha(&builtin_policy()),
        "k3s runs the new policy: {last}"
    );
    let args = last["kube_apiserver_args"].to_string();
    assert!(
        args.contains("audit-log-path=/var/log/k3s/audit.log"),
        "{args}"
    );
    assert_eq!(active(&c, "k3s"), "active");

    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(
        out.contains("already converged") && !out.contains("restart k3s"),
        "{out}"
    );
    assert_eq!(prop(&c, "k3s", "InvocationID"), after, "no second restart");
    assert_eq!(ok_starts(&c).len(), starts_before + 1);
    let status = sightline_ok(&c, &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["last_converge"]["ok"], true);
    assert_eq!(st["pending_effects"], serde_json::json!([]));
}

/// One message seen by `busctl monitor --json=short`.
#[derive(Debug)]
struct BusMessage {
    kind: String,
    sender: String,
    destination: String,
    reply_cookie: Option<u64>,
    path: String,
    member: String,
}

/// The system bus traffic while `f` runs, as the bus itself saw it
/// (systemd's `busctl monitor`, which becomes a bus monitor).
fn bus_traffic(c: &Container, f: impl FnOnce()) -> Vec<BusMessage> {
    const OUT: &str = "/run/sightline-test-monitor.json";
    const ERR: &str = "/run/sightline-test-monitor.err";
    let pid = c.sh_ok(&format!(
        "busctl monitor --json=short >{OUT} 2>{ERR} </dev/null & echo $!"
    ));
    let pid = pid.trim().to_string();
    // Ready once it shows a call made after it started (busctl's own
    // "Monitoring..." line is not printed in JSON mode by every version).
    wait_until("busctl monitor ready", Duration::from_secs(10), || {
        c.sh("busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId >/dev/null");
        c.read_file(OUT).is_some_and(|o| o.contains("\"GetId\""))
    });
    f();
    // What the bus forwarded before the last reply is in the stream once
    // the monitor has read it; a moment is plenty on an idle container.
    std::thread::sleep(Duration::from_millis(300));
    c.sh_ok(&format!("kill {pid}"));
    c.read_file(OUT)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let m: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("busctl monitor printed {l:?}: {e}"));
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            BusMessage {
                kind: text("type"),
                sender: text("sender"),
                destination: text("destination"),
                reply_cookie: m["reply_cookie"].as_u64(),
                path: text("path"),
                member: text("member"),
            }
        })
        .collect()
}

/// `sightline ARGS` in the container under the host's strace, which logs
/// its socket sends and receives; returns the output and the log.
fn sightline_traced(c: &Container, args: &[&str]) -> (Output, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let pid = c.pid1().to_string();
    let mut argv = vec![
        "-f",
        "-qq",
        "-e",
        "trace=sendmsg,recvmsg",
        "-o",
        log.path().to_str().unwrap(),
        "nsenter",
        "-t",
        &pid,
        "-a",
        "--",
        "sightline",
    ];
    argv.extend_from_slice(args);
    let out = std::process::Command::new("strace")
        .args(&argv)
        .env_clear()
        .env("PATH", common::nspawn::PATH)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("strace (apt-get install strace)");
    (out, std::fs::read_to_string(log.path()).unwrap())
}

/// The most messages sent in a row with nothing received in between: 1
/// for a client that waits for each answer before it asks again.
fn longest_send_run(strace_log: &str) -> usize {
    let (mut run, mut most) = (0, 0);
    for line in strace_log.lines() {
        if line.contains("sendmsg(") {
            run += 1;
            most = most.max(run);
        } else if line.contains("recvmsg(") && !line.contains("= -1") {
            run = 0;
        }
    }
    most
}

#[test]
fn a_no_op_apply_asks_systemd_over_one_connection_with_its_reads_sent_together() {
    // Every converge asks systemd which k3s units there are and which start
    // of k3s is running. Each connection costs authentication and a Hello,
    // and each read a round trip through the bus: a no-op on a node took
    // 8.9 ms over two connections and 17 calls, one at a time.
    let Some(c) = boot("bus-shape", "") else {
        return;
    };
    sightline_ok(&c, &["apply", "--host-only"]);
    let mut out = String::new();
    let msgs = bus_traffic(&c, || out = sightline_ok(&c, &["apply", "--host-only"]));
    assert!(out.contains("already converged"), "{out}");
    // sightline's connections are the ones that ask systemd about k3s; any
    // other client of the bus in that moment is left out.
    let callers: std::collections::BTreeSet<&str> = msgs
        .iter()
        .filter(|m| {
            m.kind == "method_call"
                && m.destination == "org.freedesktop.systemd1"
                && (m.member == "ListUnitFilesByPatterns" || m.path.contains("/unit/k3s"))
        })
        .map(|m| m.sender.as_str())
        .collect();
    let shape: Vec<String> = msgs
        .iter()
        .map(|m| {
            format!(
                "{} {} -> {} {} {:?}",
                m.kind, m.sender, m.destination, m.member, m.reply_cookie
            )
        })
        .collect();
    assert_eq!(
        callers.len(),
        1,
        "one connection asks systemd:\n{}",
        shape.join("\n")
    );
    let sightline = *callers.first().unwrap();
    let hellos = msgs
        .iter()
        .filter(|m| m.member == "Hello" && m.kind == "method_call")
        .filter(|m| callers.contains(m.sender.as_str()))
        .count();
    assert_eq!(
        hellos,
        1,
        "one connection to the bus:\n{}",
        shape.join("\n")
    );
    let calls = |member: &str| {
        msgs.iter()
            .filter(|m| m.kind == "method_call" && m.sender == sightline && m.member == member)
            .count()
    };
    // The k3s unit's description (8 properties) and its status (6), read
    // at the unit's object path with no LoadUnit first.
    assert_eq!(calls("ListUnitFilesByPatterns"), 1);
    assert_eq!(calls("LoadUnit"), 0);
    assert_eq!(calls("Get"), 14, "{}", shape.join("\n"));
    // Asked one at a time, every call waits for its answer; sent together,
    // a unit's reads leave before the first answer is read. The bus's view
    // cannot tell (it forwards each call as it reads it), so the sends and
    // receives are counted in sightline itself.
    let (out, log) = sightline_traced(&c, &["apply", "--host-only"]);
    assert!(out.status.success(), "{}", show(&out));
    let run = longest_send_run(&log);
    assert!(run >= 8, "at most {run} messages sent in a row:\n{log}");
}

/// Not a test: the figure for README's Performance section, run by
/// `scripts/bench`. A no-op `apply --host-only` on a node, against systemd
/// 252 and its bus, the way `sightline apply` runs there, timed by
/// hyperfine inside the container. Prints one Markdown table row per
/// command. SIGHTLINE_BENCH_BIN times another sightline binary instead.
#[test]
#[ignore = "a benchmark: scripts/bench runs it"]
fn bench_a_no_op_apply_on_a_node() {
    let Some(c) = boot("bench-node", "") else {
        panic!("the node benchmark needs systemd-nspawn (run as root)");
    };
    let hyperfine = std::env::var("SIGHTLINE_HYPERFINE").unwrap_or("/usr/bin/hyperfine".into());
    c.install_file(&hyperfine, "/usr/local/bin/hyperfine", 0o755);
    // Another build to compare with (an older release, say).
    if let Ok(bin) = std::env::var("SIGHTLINE_BENCH_BIN") {
        c.install_file(&bin, "/usr/bin/sightline", 0o755);
    }
    sightline_ok(&c, &["apply", "--host-only"]);
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(out.contains("already converged"), "{out}");
    let runs = std::env::var("SIGHTLINE_BENCH_RUNS").unwrap_or("300".into());
    c.sh_ok(&format!(
        "hyperfine -N -w 20 -r {runs} --export-json /run/bench.json \
         'sightline apply --host-only' 'sightline --version' >/dev/null 2>&1"
    ));
    let json: serde_json::Value =
        serde_json::from_str(&c.read_file("/run/bench.json").unwrap()).unwrap();
    let label = [
        "no-op `apply --host-only` on a node (systemd 252, D-Bus, k3s unit)",
        "process start alone on the node (`--version`)",
    ];
    for (r, label) in json["results"].as_array().unwrap().iter().zip(label) {
        let mut t: Vec<f64> = r["times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() * 1000.0)
            .collect();
        t.sort_by(f64::total_cmp);
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {label}, median | {:.2} ms (p10 {:.2}, p90 {:.2}) | |",
            at(0.5),
            at(0.1),
            at(0.9)
        );
    }
}

#[test]
fn a_change_k3s_rejects_is_rolled_back_and_k3s_stays_up() {
    let Some(c) = boot("rollback", "") else {
        return;
    };
    sightline_ok(&c, &["apply", "--host-only"]);
    let good = c.read_file(POLICY).unwrap();
    // This k3s refuses the new policy although sightline's validation accepts it.
    c.write_file(
        "/etc/default/k3s-standin",
        "REJECT_POLICY_CONTAINING=REJECT-ME\n",
        0o644,
    );
    c.write_file(
        "/etc/sightline/custom-policy.yaml",
        format!("# REJECT-ME\n{good}"),
        0o644,
    );
    c.write_file(
        "/etc/sightline/config.toml",
        format!("{BASE_CONFIG}[audit]\npolicy_source = \"/etc/sightline/custom-policy.yaml\"\n"),
        0o644,
    );
    let t = Instant::now();
    let out = sightline(&c, &["apply", "--host-only"]);
    let took = t.elapsed();
    assert!(!out.status.success(), "must exit non-zero:\n{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not become ready") && err.contains("previous configuration is restored"),
        "{err}"
    );
    assert!(err.contains("/var/lib/sightline/rejected/"), "{err}");
    assert!(
        took < Duration::from_secs(30),
        "crash loop detected before the deadline ({took:?})"
    );
    assert_eq!(
        c.read_file(POLICY).unwrap(),
        good,
        "old policy back on disk"
    );
    wait_until("k3s active again", Duration::from_secs(20), || {
        active(&c, "k3s") == "active"
    });
    let last = ok_starts(&c).last().unwrap().clone();
    assert_eq!(
        last["audit_policy_sha256"],
        sha(&good),
        "k3s runs the old configuration"
    );
    let kept = c.sh_ok("ls /var/lib/sightline/rejected/*/etc/rancher/k3s/audit-policy.yaml");
    assert!(c.read_file(kept.trim()).unwrap().contains("REJECT-ME"));
}

#[test]
fn killed_between_write_and_readiness_is_finished_on_the_next_start() {
    let Some(c) = boot("kill-recover", "") else {
        return;
    };
    // A slow k3s leaves a window between the restart and /readyz.
    c.write_file("/etc/default/k3s-standin", "READY_DELAY_SECONDS=6\n", 0o644);
    let mut child = c
        .command(&["sightline", "apply", "--host-only"])
        .spawn()
        .unwrap();
    wait_until(
        "the journal to reach the restart",
        Duration::from_secs(20),
        || {
            c.read_file("/var/lib/sightline/k3s-journal.json")
                .is_some_and(|j| j.contains("\"restarting\""))
        },
    );
    c.sh_ok("pkill -KILL -x sightline");
    let _ = child.wait();
    assert!(
        c.read_file("/var/lib/sightline/k3s-journal.json").is_some(),
        "the unfinished change is journaled"
    );
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(out.contains("recovered:"), "{out}");
    assert!(
        c.read_file("/var/lib/sightline/k3s-journal.json").is_none(),
        "journal closed"
    );
    wait_until("k3s healthy", Duration::from_secs(30), || {
        active(&c, "k3s") == "active"
    });
    assert_eq!(
        ok_starts(&c).last().unwrap()["audit_policy_sha256"],
        sha(&builtin_policy())
    );
}

#[test]
fn the_daemon_reaches_ready_survives_its_watchdog_and_repairs_drift_within_a_second() {
    let Some(p) = prepare("daemon", "[daemon]\nrecheck_interval_seconds = 600\n") else {
        return;
    };
    // A short WatchdogSec proves the pings; the packaged unit uses 10min.
    p.write_file(
        "/etc/systemd/system/sightline.service.d/50-test.conf",
        "[Service]\nWatchdogSec=3s\n",
        0o644,
    );
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    wait_until("k3s active", Duration::from_secs(30), || {
        active(&c, "k3s") == "active"
    });
    let out = c.exec(&["systemctl", "start", "sightline.service"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        active(&c, "sightline"),
        "active",
        "start returned, so READY=1 arrived"
    );
    assert_eq!(prop(&c, "sightline", "Type"), "notify");
    let k3s_id = prop(&c, "k3s", "InvocationID");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        active(&c, "sightline"),
        "active",
        "survived more than two WatchdogSec periods"
    );
    assert_eq!(prop(&c, "sightline", "NRestarts"), "0");
    assert_eq!(prop(&c, "sightline", "Result"), "success");
    // Tamper with the policy; the daemon puts it back.
    let good = c.read_file(POLICY).unwrap();
    let t = Instant::now();
    c.write_file(
        POLICY,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n",
        0o644,
    );
    let mut repaired = None;
    while t.elapsed() < Duration::from_secs(5) {
        if c.read_file(POLICY).as_deref() == Some(good.as_str()) {
            repaired = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = repaired.unwrap_or_else(|| {
        panic!(
            "not repaired; journal:\n{}",
            c.sh_ok("journalctl -u sightline --no-pager | tail -30")
        )
    });
    assert!(took < Duration::from_secs(1), "repaired in {took:?}");
    assert_eq!(
        prop(&c, "k3s", "InvocationID"),
        k3s_id,
        "putting back what k3s already runs needs no restart"
    );
    let journal = c.sh_ok("journalctl -u sightline --no-pager -o cat");
    assert!(
        journal.contains("managed file changed; repairing"),
        "{journal}"
    );
    assert!(
        !journal.lines().any(|l| l.starts_with("20")),
        "no timestamps under journald: {journal}"
    );
    assert!(!journal.contains("status=226/NAMESPACE"));
    // The metrics follow at the end of the repairing converge.
    wait_until("the repair counted", Duration::from_secs(5), || {
        c.read_file("/run/node_exporter/textfile_collector/sightline.prom")
            .is_some_and(|m| m.contains("sightline_drift_repairs_total 1"))
    });
    // SIGHUP (systemctl reload) rereads the configuration and converges.
    c.write_file(
        "/etc/sightline/config.toml",
        format!("{BASE_CONFIG}[daemon]\nrecheck_interval_seconds = 600\nmetrics_file = \"/run/node_exporter/textfile_collector/sightline-reloaded.prom\"\n"),
        0o644,
    );
    // systemd 252 logs each notification it gets at debug level
    // (src/core/service.c, service_notify_message: "Got notification
    // message from PID ... (RELOADING=1, ...)"): the daemon must say
    // RELOADING=1 and then READY=1 around the reload.
    c.sh_ok("systemctl log-level debug");
    let since = c.sh_ok("date +%s.%N").trim().to_string();
    let out = c.exec(&["systemctl", "reload", "sightline.service"]);
    assert!(out.status.success(), "{}", show(&out));
    c.sh_ok("systemctl log-level info");
    let notes: Vec<String> = c
        .sh_ok(&format!(
            "journalctl -u sightline.service --since @{since} -o cat | grep 'Got notification message' || true"
        ))
        .lines()
        .map(String::from)
        .collect();
    let reloading = notes.iter().position(|l| l.contains("RELOADING=1"));
    let ready = notes.iter().rposition(|l| l.contains("READY=1"));
    assert!(
        matches!((reloading, ready), (Some(a), Some(b)) if a < b),
        "RELOADING=1 then READY=1 expected around the reload: {notes:#?}"
    );
    wait_until(
        "metrics at the reloaded path",
        Duration::from_secs(10),
        || {
            c.read_file("/run/node_exporter/textfile_collector/sightline-reloaded.prom")
                .is_some()
        },
    );
    // A broken configuration fails `systemctl reload` (ExecReload runs
    // `sightline config --check` first) and says why; no HUP is sent.
    c.write_file(
        "/etc/sightline/config.toml",
        "[daemon]\nrecheck_interval_secs = 5\n",
        0o644,
    );
    let out = c.exec(&["systemctl", "reload", "sightline.service"]);
    assert!(
        !out.status.success(),
        "a bad reload succeeded: {}",
        show(&out)
    );
    let why = c.sh_ok("journalctl -u sightline --no-pager -o cat | tail -20");
    assert!(
        why.contains("config.toml:2:1") && why.contains("recheck_interval_secs"),
        "{why}"
    );
    // A HUP sent past the check is reported, the old configuration kept,
    // and the error reaches the journal at priority err with its fields.
    let out = c.exec(&[
        "systemctl",
        "kill",
        "--kill-who=main",
        "-s",
        "HUP",
        "sightline.service",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    wait_until(
        "the reload error in status",
        Duration::from_secs(10),
        || {
            c.read_file("/run/sightline/status.json").is_some_and(|s| {
                s.contains("configuration reload failed") && s.contains("config.toml:2:1")
            })
        },
    );
    let errors = c.sh_ok("journalctl -u sightline -p err --no-pager -o json");
    let event: serde_json::Value = errors
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("the new configuration is invalid"))
        })
        .unwrap_or_else(|| panic!("no error in `journalctl -p err`:\n{errors}"));
    assert_eq!(event["PRIORITY"], "3", "{event}");
    assert_eq!(event["SYSLOG_IDENTIFIER"], "sightline", "{event}");
    assert!(
        event["SIGHTLINE_ERROR"]
            .as_str()
            .is_some_and(|e| e.contains("config.toml:2:1")),
        "the error as a structured field: {event}"
    );
    // The informational lines are not errors.
    assert!(
        !errors.contains("managed file changed; repairing"),
        "{errors}"
    );
    // A good configuration reloads again.
    c.write_file(
        "/etc/sightline/config.toml",
        format!("{BASE_CONFIG}[daemon]\nrecheck_interval_seconds = 600\n"),
        0o644,
    );
    let out = c.exec(&["systemctl", "reload", "sightline.service"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        active(&c, "sightline"),
        "active",
        "a bad reload does not stop the daemon"
    );
    // SIGTERM stops it cleanly.
    let out = c.exec(&["systemctl", "stop", "sightline.service"]);
    assert!(out.status.success());
    assert_eq!(prop(&c, "sightline", "Result"), "success");
}

#[test]
fn units_verify_cleanly_and_the_throttle_timer_runs_the_collector() {
    let Some(p) = prepare("units", "") else {
        return;
    };
    // A fake vcgencmd makes this container a Pi as far as the collector is concerned.
    p.write_file(
        "/usr/bin/vcgencmd",
        "#!/bin/sh\ncase \"$1\" in\n  get_throttled) echo throttled=0x50005 ;;\n  measure_volts) echo volt=0.8563V ;;\nesac\n",
        0o755,
    );
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    let verify = c.exec(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/usr/lib/systemd/system/sightline.service",
        "/usr/lib/systemd/system/sightline-throttle.service",
        "/usr/lib/systemd/system/sightline-throttle.timer",
    ]);
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify must print nothing:\n{}",
        show(&verify)
    );
    // README states these figures (systemd 252's scale: lower is safer).
    // Pinned, so that a change of hardening in either direction is noticed
    // and the README updated with it.
    for (unit, expected) in [
        ("sightline.service", 1.6),
        ("sightline-throttle.service", 1.3),
    ] {
        let sec = c.exec(&["systemd-analyze", "security", "--no-pager", unit]);
        let text = String::from_utf8_lossy(&sec.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{}", show(&sec)));
        println!("{line}");
        let score: f64 = line
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (score - expected).abs() < 0.05,
            "{unit}: README says {expected}, systemd-analyze says: {line}\n{text}"
        );
    }
    wait_until("k3s active", Duration::from_secs(30), || {
        active(&c, "k3s") == "active"
    });
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(
        out.contains("enable and start sightline-throttle.timer: done"),
        "{out}"
    );
    assert_eq!(
        prop(&c, "sightline-throttle.timer", "UnitFileState"),
        "enabled"
    );
    assert_eq!(active(&c, "sightline-throttle.timer"), "active");
    // The drop-in's interval is in force after the reload.
    assert!(
        c.sh_ok("systemctl cat sightline-throttle.timer")
            .contains("OnUnitActiveSec=60s")
    );
    // The collector runs sandboxed and writes its textfile.
    let run = c.exec(&["systemctl", "start", "sightline-throttle.service"]);
    assert!(
        run.status.success(),
        "{}\n{}",
        show(&run),
        c.sh_ok("journalctl -u sightline-throttle --no-pager | tail")
    );
    let prom = c
        .read_file("/run/node_exporter/textfile_collector/rpi_throttle.prom")
        .unwrap();
    assert!(
        prom.contains("rpi_under_voltage_now 1") && prom.contains("rpi_core_volts 0.8563"),
        "{prom}"
    );
}

#[test]
fn the_watchdog_setting_is_applied_over_dbus_and_read_back() {
    let Some(p) = prepare("watchdog", "") else {
        return;
    };
    // The container has no watchdog device, so facts come from a Pi-like
    // root while the effect goes to this container's systemd.
    p.write_file(
        "/srv/pi/sys/class/watchdog/watchdog0/identity",
        "Broadcom BCM2835 Watchdog timer\n",
        0o644,
    );
    p.write_file(
        "/srv/pi/proc/meminfo",
        "MemTotal: 3884504 kB\nMemAvailable: 3201820 kB\n",
        0o644,
    );
    // k3s is found over this bus (the container's stand-in), but its API
    // certificates are not under /srv/pi, so readiness could never be
    // proven there: this test is about the watchdog alone.
    p.write_file(
        "/srv/pi/etc/sightline/config.toml",
        "[audit]\nenabled = false\n",
        0o644,
    );
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    let out = sightline_ok(
        &c,
        &[
            "--root",
            "/srv/pi",
            "--system-bus",
            "unix:path=/run/dbus/system_bus_socket",
            "apply",
            "--host-only",
        ],
    );
    assert!(out.contains("apply the watchdog setting (RuntimeWatchdogUSec=14s): done (RuntimeWatchdogUSec=14000000)"), "{out}");
    let manager = String::from_utf8_lossy(
        &c.exec(&["systemctl", "show", "-p", "RuntimeWatchdogUSec", "--value"])
            .stdout,
    )
    .trim()
    .to_string();
    assert_eq!(manager, "14s", "PID 1 holds the clamped value");
}

#[test]
fn a_non_root_caller_gets_a_clear_error() {
    let Some(c) = boot("nonroot", "") else { return };
    let out = c.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sightline",
        "apply",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must run as root") && err.contains("sudo"),
        "{err}"
    );
    assert!(c.read_file(POLICY).is_none(), "nothing written");
}

#[test]
fn a_stopped_k3s_is_not_started_and_loads_the_files_when_it_starts() {
    let Some(c) = boot("stopped-k3s", "") else {
        return;
    };
    c.sh_ok("systemctl stop k3s");
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(
        out.contains("k3s.service is inactive; it loads the audit settings when it starts"),
        "{out}"
    );
    assert_eq!(active(&c, "k3s"), "inactive", "sightline did not start it");
    // When the operator starts k3s, it loads the new files; the owed
    // restart is then recognised as done, not repeated.
    c.sh_ok("systemctl start k3s");
    let id = prop(&c, "k3s", "InvocationID");
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(
        out.contains("started after the files were written"),
        "{out}"
    );
    assert_eq!(prop(&c, "k3s", "InvocationID"), id, "no restart");
    assert_eq!(
        ok_starts(&c).last().unwrap()["audit_policy_sha256"],
        sha(&builtin_policy())
    );
}

#[test]
fn uninstall_stops_the_daemon_first_so_nothing_is_put_back() {
    let Some(c) = boot("uninstall", "[daemon]\nrecheck_interval_seconds = 600\n") else {
        return;
    };
    let out = c.exec(&["systemctl", "enable", "--now", "sightline.service"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(c.read_file(POLICY).is_some());
    // --no-restart cannot stop it, so it refuses rather than race it.
    let refused = sightline(&c, &["uninstall", "--no-restart", "--keep-cluster"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("would put back what uninstall removes"),
        "{}",
        show(&refused)
    );
    assert!(c.read_file(POLICY).is_some(), "the refusal removed nothing");
    let out = sightline_ok(&c, &["uninstall", "--keep-cluster"]);
    assert!(
        out.contains("sightline.service: stopped and disabled"),
        "{out}"
    );
    assert_eq!(active(&c, "sightline"), "inactive");
    assert_eq!(
        c.sh_ok("systemctl is-enabled sightline.service || true")
            .trim(),
        "disabled"
    );
    // The daemon is not there to repair what uninstall removed.
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.read_file(POLICY).is_none(), "the audit policy came back");
    assert_eq!(active(&c, "k3s"), "active");
}

fn starts_count(c: &Container) -> usize {
    ok_starts(c).len()
}

/// Issue 11 item 1: k3s reads its config only when it starts
/// (k3s pkg/configfilearg/parser.go), so after someone else restarts it on
/// an edited drop-in, repairing the drop-in needs exactly one restart.
#[test]
fn an_edit_k3s_was_restarted_on_is_repaired_with_exactly_one_restart() {
    let Some(c) = boot("outside-restart", "") else {
        return;
    };
    sightline_ok(&c, &["apply", "--host-only"]);
    let dropin = DROPIN;
    // A restart from outside on the same files needs nothing.
    c.sh_ok("systemctl restart k3s");
    let n = starts_count(&c);
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(!out.contains("restart k3s.service and wait"), "{out}");
    assert_eq!(starts_count(&c), n, "no restart for the same files");
    // An edit, then a restart from outside: k3s runs the edit.
    c.sh_ok(&format!(
        "sed -i 's/audit-log-maxage=30/audit-log-maxage=7/' {dropin} && systemctl restart k3s"
    ));
    let n = starts_count(&c);
    assert!(
        ok_starts(&c).last().unwrap()["kube_apiserver_args"]
            .to_string()
            .contains("audit-log-maxage=7")
    );
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(
        out.contains("restart k3s.service and wait for /readyz: done"),
        "{out}"
    );
    assert_eq!(starts_count(&c), n + 1, "exactly one restart");
    assert!(
        ok_starts(&c).last().unwrap()["kube_apiserver_args"]
            .to_string()
            .contains("audit-log-maxage=30")
    );
    let out = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(out.contains("already converged"), "{out}");
    assert_eq!(starts_count(&c), n + 1);
}

/// The same, with a k3s that rejects the repaired file: sightline rolls
/// back to what k3s ran and exits non-zero.
#[test]
fn a_repair_k3s_rejects_is_rolled_back_with_a_non_zero_exit() {
    let Some(c) = boot("outside-restart-reject", "") else {
        return;
    };
    sightline_ok(&c, &["apply", "--host-only"]);
    let policy = "/etc/rancher/k3s/audit-policy.yaml";
    c.sh_ok(&format!(
        "sed -i 's/# Health probes.*/# tuned by the admin/' {policy} && systemctl restart k3s"
    ));
    let edited = c.read_file(policy).unwrap();
    c.write_file(
        "/etc/default/k3s-standin",
        "REJECT_POLICY_CONTAINING=Health probes\n",
        0o644,
    );
    let out = sightline(&c, &["apply", "--host-only"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("previous configuration is restored"),
        "{}",
        show(&out)
    );
    assert_eq!(c.read_file(policy).unwrap(), edited, "rolled back");
    wait_until("k3s active", Duration::from_secs(30), || {
        active(&c, "k3s") == "active"
    });
    assert_eq!(
        ok_starts(&c).last().unwrap()["audit_policy_sha256"],
        sha(&edited)
    );
}

/// `sightline apply --host-only` in the container, killed at `failpoint`
/// when given; `log` collects the failpoints passed.
#[cfg(feature = "failpoints")]
fn apply_at(c: &Container, failpoint: Option<&str>, log: bool) -> Output {
    let mut argv = vec!["env".to_string(), "SIGHTLINE_LOG=info".to_string()];
    if let Some(f) = failpoint {
        argv.push(format!("SIGHTLINE_FAILPOINT={f}"));
    }
    if log {
        argv.push("SIGHTLINE_FAILPOINT_LOG=/run/points.log".into());
    }
    argv.extend(["sightline", "apply", "--host-only"].map(String::from));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    c.command(&argv).output().unwrap()
}

/// Every `name@n` in the container's failpoint log, in order; clears it.
#[cfg(feature = "failpoints")]
fn logged_points(c: &Container) -> Vec<String> {
    let text = c.read_file("/run/points.log").unwrap_or_default();
    c.sh_ok("rm -f /run/points.log");
    common::rollout_sweep::numbered(&text)
}

#[cfg(feature = "failpoints")]
fn killed(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9) || out.status.code() == Some(128 + 9)
}

/// The invariants after a killed run and the next apply: k3s active (never
/// `start-limit-hit`) on the complete config `want_maxage`/`want_policy`,
/// no temp file, no journal left.
#[cfg(feature = "failpoints")]
fn assert_settled(c: &Container, point: &str, want_maxage: u32, want_policy: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while active(c, "k3s") != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "{point}: k3s not active:\n{}",
            show(&c.sh("systemctl status k3s --no-pager -n 30"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(prop(c, "k3s", "Result"), "start-limit-hit", "{point}");
    let last = ok_starts(c).last().unwrap().clone();
    assert!(
        last["kube_apiserver_args"]
            .to_string()
            .contains(&format!("audit-log-maxage={want_maxage}\"")),
        "{point}: k3s runs {last}"
    );
    assert_eq!(last["audit_policy_sha256"], sha(want_policy), "{point}");
    let temps = c.sh_ok(
        "find /etc/rancher /etc/systemd /var/lib/sightline /var/log/k3s -name '.sightline-tmp.*' 2>/dev/null || true",
    );
    assert!(temps.trim().is_empty(), "{point}: temp files left: {temps}");
    for j in ["intent.json", "k3s-journal.json"] {
        assert!(
            c.read_file(&format!("/var/lib/sightline/{j}")).is_none(),
            "{point}: {j} left"
        );
    }
}

/// bootupd's model under a real systemd 252: for every failpoint an apply
/// passes (writes, journal phases, restart, readiness wait, rollback),
/// sightline is SIGKILLed there, then the next apply runs. k3s has a start
/// rate limit (5 starts in 10 s, systemd's default) so restarts in quick
/// succession are covered too.
#[cfg(feature = "failpoints")]
#[test]
fn every_kill_point_is_finished_or_undone_by_the_next_apply() {
    let Some(c) = boot("killpoints", "") else {
        return;
    };
    c.write_file(
        "/etc/systemd/system/k3s.service.d/50-start-limit.conf",
        "[Unit]\nStartLimitIntervalSec=10\nStartLimitBurst=5\n",
        0o644,
    );
    c.sh_ok("systemctl daemon-reload");
    // A slow start, so that the readiness wait is a point too.
    c.write_file("/etc/default/k3s-standin", "READY_DELAY_SECONDS=2\n", 0o644);
    // Each step changes both audit files: the policy (a custom one with a
    // version line) and the drop-in (the log's max age).
    let builtin = builtin_policy();
    let policy_of = |days: u32, reject: bool| {
        format!(
            "{builtin}# v{days}\n{}",
            if reject { "# REJECT-ME\n" } else { "" }
        )
    };
    let set = |days: u32, reject: bool| {
        c.write_file("/etc/sightline/policy.yaml", policy_of(days, reject), 0o644);
        c.write_file(
            "/etc/sightline/config.toml",
            format!(
                "{BASE_CONFIG}[audit]\nmax_age_days = {days}\npolicy_source = \"/etc/sightline/policy.yaml\"\n"
            ),
            0o644,
        );
    };
    set(1, false);
    let first = apply_at(&c, None, false);
    assert!(first.status.success(), "{}", show(&first));
    set(2, false);
    let out = apply_at(&c, None, true);
    assert!(out.status.success(), "{}", show(&out));
    // How often the readiness wait polls depends on timing: its first
    // round is the point. Inside an atomic write, one point per write: a
    // kill after the data is written leaves what a kill at the other two
    // leaves (a temp file of a dead process beside the old file), and each
    // point here costs k3s restarts; `tests/killpoints.rs` sweeps all three
    // at every write.
    let points: Vec<String> = logged_points(&c)
        .into_iter()
        .filter(|p| !p.starts_with("restart.wait@") || p == "restart.wait@1")
        .filter(|p| !p.starts_with("atomic.") || p.starts_with("atomic.data_written@"))
        .collect();
    assert!(points.iter().any(|p| p == "restart.wait@1"), "{points:?}");

    // The rollback path: a policy the stand-in rejects.
    c.write_file(
        "/etc/default/k3s-standin",
        "READY_DELAY_SECONDS=2\nREJECT_POLICY_CONTAINING=REJECT-ME\n",
        0o644,
    );
    set(3, true);
    let out = apply_at(&c, None, true);
    assert!(!out.status.success(), "{}", show(&out));
    let rollback_points: Vec<String> = logged_points(&c)
        .into_iter()
        .filter(|p| {
            p.starts_with("rollback")
                || p.starts_with("journal.restore")
                || p == "restart.reset_failed.before@1"
        })
        .collect();
    assert!(!rollback_points.is_empty());
    assert_settled(&c, "rollback discovery", 2, &policy_of(2, false));
    let mut good = 2;

    let mut swept = 0;
    let mut days = 3;
    for point in &points {
        days += 1;
        set(days, false);
        let out = apply_at(&c, Some(point), false);
        assert!(killed(&out), "{point}: not killed there:\n{}", show(&out));
        let next = apply_at(&c, None, false);
        assert!(
            next.status.success(),
            "{point}: next apply:\n{}",
            show(&next)
        );
        assert_settled(&c, point, days, &policy_of(days, false));
        good = days;
        let n = starts_count(&c);
        let state = c.read_file("/var/lib/sightline/state.json");
        let again = apply_at(&c, None, false);
        assert!(again.status.success(), "{point}: {}", show(&again));
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("already converged"),
            "{point}: {}",
            show(&again)
        );
        assert_eq!(
            starts_count(&c),
            n,
            "{point}: the second apply restarted k3s"
        );
        assert_eq!(
            c.read_file("/var/lib/sightline/state.json"),
            state,
            "{point}: state rewritten"
        );
        swept += 1;
    }
    for point in &rollback_points {
        days += 1;
        set(days, true);
        let out = apply_at(&c, Some(point), false);
        assert!(killed(&out), "{point}: not killed there:\n{}", show(&out));
        // The next run finishes the rollback, retries the rejected change
        // (a person asked for it), and reports the rejection again.
        let next = apply_at(&c, None, false);
        assert!(!next.status.success(), "{point}: {}", show(&next));
        assert!(
            show(&next).contains("previous configuration is restored"),
            "{point}: {}",
            show(&next)
        );
        assert_settled(&c, point, good, &policy_of(good, false));
        // A further apply of the same rejected change is not a no-op, by
        // design: `apply` is a person asking for this configuration, so the
        // CLI tries it again (the daemon holds it back: engine/converge.rs
        // `hold_back_rejected`). What it may do is bounded: one try, rolled
        // back, k3s started exactly once more and on the old files, which
        // are back byte for byte with the same records.
        let files = (c.read_file(POLICY), c.read_file(DROPIN));
        let records = |c: &Container| {
            let state: serde_json::Value =
                serde_json::from_str(&c.read_file("/var/lib/sightline/state.json").unwrap())
                    .unwrap();
            (state["files"].clone(), state["dirs"].clone())
        };
        let recorded = records(&c);
        let n = starts_count(&c);
        let retry = apply_at(&c, None, false);
        assert!(
            !retry.status.success() && show(&retry).contains("previous configuration is restored"),
            "{point}: the retry: {}",
            show(&retry)
        );
        assert_settled(&c, point, good, &policy_of(good, false));
        assert_eq!(starts_count(&c), n + 1, "{point}: the retry's k3s starts");
        assert_eq!((c.read_file(POLICY), c.read_file(DROPIN)), files, "{point}");
        assert_eq!(records(&c), recorded, "{point}: records after the retry");
        // Back on the configuration k3s runs, an apply writes nothing and
        // restarts nothing.
        set(good, false);
        let state = c.read_file("/var/lib/sightline/state.json");
        let back = apply_at(&c, None, false);
        assert!(
            back.status.success()
                && String::from_utf8_lossy(&back.stdout).contains("already converged"),
            "{point}: back on the old configuration: {}",
            show(&back)
        );
        assert_eq!(starts_count(&c), n + 1, "{point}: restarted for nothing");
        assert_eq!(
            c.read_file("/var/lib/sightline/state.json"),
            state,
            "{point}: state rewritten"
        );
        swept += 1;
    }
    set(days + 1, false);
    let out = apply_at(&c, None, false);
    assert!(out.status.success(), "{}", show(&out));
    println!("kill-point sweep (systemd 252): {swept} points swept");
}

/// A container for the rollout sweep (tests/common/rollout_sweep.rs): its
/// host layer converged against the stand-in k3s, then sightline pointed
/// at a stand-in API served inside the container's network. A rollout
/// changes no k3s setting, so k3s must stay active and never be restarted.
#[cfg(feature = "failpoints")]
struct ContainerNode {
    c: Container,
    starts: usize,
}

#[cfg(feature = "failpoints")]
impl common::rollout_sweep::Node for ContainerNode {
    fn root(&self) -> std::path::PathBuf {
        self.c.root()
    }

    fn apply(&self, failpoint: Option<&str>, log: bool) -> Output {
        let mut argv = vec!["env".to_string(), "SIGHTLINE_LOG=info".to_string()];
        if let Some(f) = failpoint {
            argv.push(format!("SIGHTLINE_FAILPOINT={f}"));
        }
        if log {
            argv.push("SIGHTLINE_FAILPOINT_LOG=/run/points.log".into());
        }
        argv.extend(["sightline", "apply"].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.c.command(&argv).output().unwrap()
    }

    fn take_log(&self) -> String {
        let text = self.c.read_file("/run/points.log").unwrap_or_default();
        self.c.remove_file("/run/points.log");
        text
    }

    fn watched(&self) -> Vec<std::path::PathBuf> {
        // Not /etc/systemd/system as a whole: its wants links are absolute
        // and would be read through the host's /.
        [
            "etc/rancher",
            "etc/sightline",
            "etc/systemd/system.conf.d",
            "var/lib/sightline",
            "var/lib/rancher",
        ]
        .map(std::path::PathBuf::from)
        .to_vec()
    }

    fn settled(&self, point: &str) {
        assert_eq!(active(&self.c, "k3s"), "active", "{point}: k3s");
        assert_eq!(
            starts_count(&self.c),
            self.starts,
            "{point}: k3s restarted by a rollout"
        );
    }
}

/// The rollout's kill points under systemd 252: every `rollout.*` point of
/// every stage, both ways, with k3s running under systemd beside it.
#[cfg(feature = "failpoints")]
#[test]
fn every_kill_point_of_a_rollout_is_recovered_under_systemd() {
    // Containers cannot run here: reported (or failed) by `prepare`.
    if prepare("rollout-probe", "").is_none() {
        return;
    }
    let swept = common::rollout_sweep::sweep(8, || {
        let c = boot("rollout-kill", "").unwrap();
        let out = sightline(&c, &["apply", "--host-only"]);
        assert!(out.status.success(), "{}", show(&out));
        let fake = common::kubefake::KubeFake::start_in_netns(&c.root(), c.pid1());
        let starts = starts_count(&c);
        (ContainerNode { c, starts }, fake)
    });
    println!("{}", swept.report("systemd 252"));
}

/// A full disk and a read-only file system under the audit files (a small
/// tmpfs mounted over /etc/rancher/k3s): the original stays untouched, the
/// error names the path and the cause, no temp file is left, and the next
/// apply on a healthy file system finishes the change.
#[test]
fn a_full_disk_or_a_read_only_fs_leaves_the_target_untouched() {
    let Some(c) = boot("bad-env", "") else {
        return;
    };
    let policy = "/etc/rancher/k3s/audit-policy.yaml";
    let original = "# the admin own policy\napiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n";
    c.sh_ok(&format!(
        "mkdir -p /etc/rancher/k3s && cp -a /etc/rancher/k3s /root/k3s-etc && \
         mount -t tmpfs -o size=64k tmpfs /etc/rancher/k3s && cp -a /root/k3s-etc/. /etc/rancher/k3s/ && \
         printf '%s' '{original}' > {policy} && \
         (dd if=/dev/zero of=/etc/rancher/k3s/filler bs=4k 2>/dev/null || true)"
    ));
    let no_temp = |what: &str| {
        let t = c.sh_ok(
            "find /etc/rancher/k3s /var/lib/sightline -name '.sightline-tmp.*' 2>/dev/null || true",
        );
        assert!(t.trim().is_empty(), "{what}: temp files left: {t}");
    };
    let out = sightline(&c, &["apply", "--host-only"]);
    let text = show(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(policy) && text.contains("No space left on device"),
        "{text}"
    );
    assert_eq!(c.read_file(policy).unwrap(), original);
    no_temp("ENOSPC");

    c.sh_ok("rm /etc/rancher/k3s/filler && mount -o remount,ro /etc/rancher/k3s");
    let out = sightline(&c, &["apply", "--host-only"]);
    let text = show(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("/etc/rancher/k3s/") && text.contains("Read-only file system"),
        "{text}"
    );
    assert_eq!(c.read_file(policy).unwrap(), original);
    no_temp("EROFS");

    c.sh_ok("mount -o remount,rw /etc/rancher/k3s");
    sightline_ok(&c, &["apply", "--host-only"]);
    assert_eq!(
        ok_starts(&c).last().unwrap()["audit_policy_sha256"],
        sha(&builtin_policy())
    );
    assert_eq!(
        c.read_file(&format!("/var/lib/sightline/backup{policy}"))
            .unwrap(),
        original,
        "the original is backed up"
    );
    no_temp("after");
}

/// Two `sightline apply` at once: the second waits for the lock; both
/// succeed, k3s restarts once, and the state stays whole.
#[test]
fn two_applies_at_once_take_turns() {
    let Some(c) = boot("two-applies", "") else {
        return;
    };
    c.write_file("/etc/default/k3s-standin", "READY_DELAY_SECONDS=3\n", 0o644);
    let n = starts_count(&c);
    let first = c
        .command(&["sightline", "apply", "--host-only"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the first apply to hold the lock",
        Duration::from_secs(20),
        || {
            c.read_file("/var/lib/sightline/intent.json").is_some()
                || c.read_file("/var/lib/sightline/k3s-journal.json").is_some()
        },
    );
    let second = sightline(&c, &["apply", "--host-only"]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", show(&first));
    assert!(second.status.success(), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("already converged"),
        "the second ran after the first: {}",
        show(&second)
    );
    assert_eq!(starts_count(&c), n + 1, "one restart");
    let state = c.read_file("/var/lib/sightline/state.json").unwrap();
    serde_json::from_str::<serde_json::Value>(&state).expect("state is whole");
}

/// `apply` while the daemon converges: they take turns on the lock; k3s
/// restarts once for the change, and the state stays whole.
#[test]
fn apply_while_the_daemon_runs_takes_its_turn() {
    let Some(c) = boot(
        "apply-and-daemon",
        "[daemon]\nrecheck_interval_seconds = 600\n",
    ) else {
        return;
    };
    c.write_file("/etc/default/k3s-standin", "READY_DELAY_SECONDS=3\n", 0o644);
    let n = starts_count(&c);
    // `start` without waiting: the daemon's first converge (with its k3s
    // restart) runs while the CLI asks for the lock.
    c.sh_ok("systemctl start --no-block sightline.service");
    wait_until("the daemon to begin", Duration::from_secs(20), || {
        c.read_file("/var/lib/sightline/intent.json").is_some()
            || c.read_file("/var/lib/sightline/k3s-journal.json").is_some()
            || c.read_file("/var/lib/sightline/state.json").is_some()
    });
    let out = sightline(&c, &["apply", "--host-only"]);
    assert!(out.status.success(), "{}", show(&out));
    wait_until("the daemon ready", Duration::from_secs(60), || {
        active(&c, "sightline") == "active"
    });
    assert_eq!(starts_count(&c), n + 1, "one restart between them");
    let state = c.read_file("/var/lib/sightline/state.json").unwrap();
    serde_json::from_str::<serde_json::Value>(&state).expect("state is whole");
    let again = sightline_ok(&c, &["apply", "--host-only"]);
    assert!(again.contains("already converged"), "{again}");
}
