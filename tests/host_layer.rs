//! The host layer against fake machines: decisions, every file's content
//! and mode, idempotency, uninstall, bad config, and the throttle collector.

mod common;

use common::*;
use pretty_assertions::assert_eq;
use serde_json::Value;

const POLICY: &str = "/etc/rancher/k3s/audit-policy.yaml";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml";
const WATCHDOG: &str = "/etc/systemd/system.conf.d/60-sightline-watchdog.conf";
const TIMER_DROPIN: &str = "/etc/systemd/system/sightline-throttle.timer.d/60-sightline.conf";
const SERVICE_DROPIN: &str = "/etc/systemd/system/sightline-throttle.service.d/60-sightline.conf";
const STATE: &str = "/var/lib/sightline/state.json";

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn decisions_for_every_machine() {
    struct Case {
        name: &'static str,
        tier: &'static str,
        rs: &'static str,
        driver: Value,
        role: &'static str,
        cni: &'static str,
        btf: bool,
        arch: &'static str,
        os: &'static str,
        throttle: &'static str,
    }
    let cases = [
        Case {
            name: "pi4",
            tier: "light",
            rs: "falco",
            driver: "kmod".into(),
            role: "server",
            cni: "flannel",
            btf: false,
            arch: "aarch64",
            os: "debian",
            throttle: "sysfs",
        },
        Case {
            name: "ubuntu-cilium",
            tier: "full",
            rs: "tetragon",
            driver: Value::Null,
            role: "server",
            cni: "cilium",
            btf: true,
            arch: "x86_64",
            os: "ubuntu",
            throttle: "none",
        },
        Case {
            name: "flatcar",
            tier: "full",
            rs: "falco",
            driver: "modern_ebpf".into(),
            role: "server",
            cni: "flannel",
            btf: true,
            arch: "x86_64",
            os: "flatcar",
            throttle: "none",
        },
        Case {
            name: "agent",
            tier: "full",
            rs: "falco",
            driver: "modern_ebpf".into(),
            role: "agent",
            cni: "flannel",
            btf: true,
            arch: "x86_64",
            os: "debian",
            throttle: "none",
        },
        Case {
            name: "nok3s",
            tier: "light",
            rs: "falco",
            driver: "kmod".into(),
            role: "none",
            cni: "none",
            btf: false,
            arch: "x86_64",
            os: "debian",
            throttle: "none",
        },
    ];
    for c in cases {
        let root = fixture(c.name);
        let d = detect(root.path());
        assert_eq!(s(&d["tier"]), c.tier, "{}: {d:#}", c.name);
        assert!(
            !d["tier_reasons"].as_array().unwrap().is_empty(),
            "{}",
            c.name
        );
        assert_eq!(s(&d["runtime_security"]), c.rs, "{}", c.name);
        assert_eq!(d["falco_driver"], c.driver, "{}", c.name);
        assert!(
            !d["runtime_security_reasons"].as_array().unwrap().is_empty(),
            "{}",
            c.name
        );
        assert_eq!(s(&d["k3s"]["role"]), c.role, "{}", c.name);
        assert_eq!(s(&d["cni"]), c.cni, "{}", c.name);
        assert_eq!(d["btf"], Value::Bool(c.btf), "{}", c.name);
        assert_eq!(s(&d["arch"]), c.arch, "{}", c.name);
        assert_eq!(s(&d["os"]["id"]), c.os, "{}", c.name);
        assert_eq!(s(&d["throttle_source"]), c.throttle, "{}", c.name);
        assert!(d["memory"]["total_bytes"].as_u64().unwrap() > 0);
        assert!(d["cpus"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn pi4_facts_in_detail() {
    let root = fixture("pi4");
    let d = detect(root.path());
    assert_eq!(s(&d["board"]), "Raspberry Pi 4 Model B Rev 1.5");
    assert_eq!(s(&d["os"]["family"]), "raspberry_pi_os");
    assert_eq!(s(&d["os"]["version_id"]), "12");
    assert_eq!(d["memory"]["total_bytes"], 3_884_504u64 * 1024);
    assert_eq!(d["memory"]["available_bytes"], 3_201_820u64 * 1024);
    assert_eq!(d["cpus"], 4);
    assert_eq!(s(&d["watchdog"]["device"]), "/dev/watchdog0");
    assert_eq!(
        s(&d["watchdog"]["identity"]),
        "Broadcom BCM2835 Watchdog timer"
    );
    assert_eq!(
        d["watchdog"]["max_timeout_s"], 15,
        "known BCM2835 maximum when sysfs lacks max_timeout"
    );
    assert_eq!(d["gpu"], Value::Null);
    let reasons = d["tier_reasons"].to_string();
    assert!(
        reasons.contains("6.0 GiB"),
        "the rule is explained: {reasons}"
    );
    let text = ok(root.path(), &["detect"]);
    assert!(
        text.contains("tier") && text.contains("light") && text.contains("Raspberry Pi 4"),
        "{text}"
    );
}

#[test]
fn overrides_win_and_say_so() {
    let root = fixture("ubuntu-cilium");
    write(
        root.path(),
        "/etc/sightline/config.toml",
        "tier = \"light\"\nruntime_security = \"none\"\n",
    );
    let d = detect(root.path());
    assert_eq!(s(&d["tier"]), "light");
    assert!(
        d["tier_reasons"][0]
            .as_str()
            .unwrap()
            .contains("/etc/sightline/config.toml:1:1"),
        "{d:#}"
    );
    assert_eq!(s(&d["runtime_security"]), "none");
    assert_eq!(d["tier_overridden"], true);
}

#[test]
fn gpu_and_vm_detection() {
    let root = fixture("flatcar");
    write(
        root.path(),
        "/proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: Tesla T4\n",
    );
    let d = detect(root.path());
    assert_eq!(s(&d["gpu"]["vendor"]), "nvidia");
    assert_eq!(d["virtualized"], true);
}

#[test]
fn pi4_apply_writes_every_file_with_content_and_mode() {
    let root = fixture("pi4");
    let r = root.path();
    let out = ok(r, &["apply", "--no-restart", "--host-only"]);
    // The log directory comes first: k3s needs it before the flags point at it.
    let first = out
        .lines()
        .find(|l| l.trim_start().starts_with("mkdir"))
        .unwrap();
    assert!(first.contains("/var/log/k3s"), "{out}");
    assert_eq!(mode(r, "/var/log/k3s"), 0o700);

    assert_eq!(
        read(r, POLICY),
        std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap()
    );
    assert_eq!(mode(r, POLICY), 0o600);
    let dropin = read(r, DROPIN);
    assert_eq!(
        dropin
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
        "kube-apiserver-arg+:\n  - \"audit-log-path=/var/log/k3s/audit.log\"\n  - \"audit-policy-file=/etc/rancher/k3s/audit-policy.yaml\"\n  - \"audit-log-maxage=30\"\n  - \"audit-log-maxbackup=10\"\n  - \"audit-log-maxsize=100\""
    );
    assert!(
        !dropin.contains("\nkube-apiserver-arg:"),
        "never the plain key"
    );
    assert_eq!(mode(r, DROPIN), 0o600);

    let wd = read(r, WATCHDOG);
    assert!(
        wd.contains("[Manager]\nRuntimeWatchdogSec=14s\nRebootWatchdogSec=14s\n"),
        "{wd}"
    );
    assert!(
        !wd.contains("WatchdogDevice="),
        "watchdog0 is systemd's default"
    );
    assert_eq!(mode(r, WATCHDOG), 0o644);

    let timer = read(r, TIMER_DROPIN);
    assert!(
        timer.ends_with("[Timer]\nOnUnitActiveSec=\nOnUnitActiveSec=60s\n"),
        "{timer}"
    );
    assert!(
        read(r, SERVICE_DROPIN)
            .ends_with("[Service]\nReadWritePaths=/run/node_exporter/textfile_collector\n")
    );
    assert_eq!(mode(r, "/run/node_exporter/textfile_collector"), 0o755);
    assert_eq!(mode(r, STATE), 0o600);

    for effect in [
        "reload systemd",
        "apply the watchdog setting (RuntimeWatchdogUSec=14s)",
        "enable and start sightline-throttle.timer",
        "restart k3s.service and wait for /readyz",
    ] {
        assert!(out.contains(effect), "missing effect {effect:?} in:\n{out}");
    }
    assert!(
        out.contains("--no-restart: effects are listed, not run"),
        "{out}"
    );
}

#[test]
fn ubuntu_gets_tetragon_facts_audit_watchdog_but_no_throttle() {
    let root = fixture("ubuntu-cilium");
    let r = root.path();
    let out = ok(r, &["apply", "--no-restart", "--host-only"]);
    assert!(read(r, WATCHDOG).contains("RuntimeWatchdogSec=30s\nRebootWatchdogSec=120s\n"));
    assert!(!r.join(TIMER_DROPIN.trim_start_matches('/')).exists());
    // A plain key in config.yaml is fine: the drop-in appends to it, and
    // command-line values are appended after both (k3s configfilearg
    // parser.go), so nothing replaces the audit flags.
    assert!(
        !out.contains("plain kube-apiserver-arg") && !out.contains("would replace"),
        "no warning about a plain key that sightline appends to: {out}"
    );
    assert!(out.contains("original kept"), "{out}");
}

#[test]
fn agent_and_no_k3s_get_no_audit_files() {
    for name in ["agent", "nok3s"] {
        let root = fixture(name);
        let r = root.path();
        let before = snapshot(r);
        let out = ok(r, &["apply", "--no-restart", "--host-only"]);
        assert!(!r.join(POLICY.trim_start_matches('/')).exists(), "{name}");
        assert!(!r.join(DROPIN.trim_start_matches('/')).exists(), "{name}");
        assert!(!r.join("var/log/k3s").exists(), "{name}");
        let after = snapshot(r);
        let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        // State, the lock and status, and sightline's own metrics textfile.
        let allowed = |p: &std::path::Path| {
            p.starts_with("run")
                || p.starts_with("var/lib/sightline")
                || p == std::path::Path::new("var/lib/")
                || p == std::path::Path::new("var/")
        };
        assert!(
            added.iter().all(|p| allowed(p)),
            "{name}: only state, status and metrics may appear, got {added:?}"
        );
        let plan: Value = serde_json::from_str(&ok(r, &["plan", "--json", "--host-only"])).unwrap();
        let skipped = plan["host"]["skipped"].to_string();
        let why = if name == "agent" {
            "agent node"
        } else {
            "no k3s server"
        };
        assert!(skipped.contains(why), "{name}: {skipped}");
        assert!(out.contains("nothing changed"), "{name}: {out}");
    }
}

#[test]
fn second_apply_changes_nothing_and_lists_no_effects() {
    for name in ["pi4", "ubuntu-cilium", "flatcar", "agent", "nok3s"] {
        let root = fixture(name);
        let r = root.path();
        ok(r, &["apply", "--no-restart", "--host-only"]);
        let files_after_first = snapshot(r);
        let out = ok(r, &["apply", "--no-restart", "--host-only"]);
        assert!(out.contains("already converged"), "{name}: {out}");
        assert!(!out.contains("follow-up effects due"), "{name}: {out}");
        let plan: Value = serde_json::from_str(&ok(r, &["plan", "--json", "--host-only"])).unwrap();
        assert_eq!(plan["host"]["changes"], Value::Array(vec![]), "{name}");
        assert_eq!(plan["host"]["effects"], Value::Array(vec![]), "{name}");
        // Only state, status and sightline's own metrics may be rewritten.
        let own = |k: &std::path::PathBuf| {
            k.starts_with("var/lib/sightline")
                || k.starts_with("run/sightline")
                || k.ends_with("sightline.prom")
        };
        let mut a = snapshot(r);
        let mut b = files_after_first.clone();
        a.retain(|k, _| !own(k));
        b.retain(|k, _| !own(k));
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn skipped_restart_stays_pending_and_plan_exit_code_says_so() {
    let root = fixture("pi4");
    let r = root.path();
    let before = sightline(r, &["plan", "--exit-code", "--host-only"]);
    assert_eq!(before.status.code(), Some(2));
    ok(r, &["apply", "--no-restart", "--host-only"]);
    let out = ok(r, &["apply", "--no-restart", "--host-only"]);
    assert!(
        out.contains("pending from an earlier run") && out.contains("restart k3s.service"),
        "{out}"
    );
    assert_eq!(
        sightline(r, &["plan", "--exit-code", "--host-only"])
            .status
            .code(),
        Some(2),
        "a pending restart is something to do"
    );
    let nok = fixture("nok3s");
    ok(nok.path(), &["apply", "--no-restart", "--host-only"]);
    assert_eq!(
        sightline(nok.path(), &["plan", "--exit-code", "--host-only"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn plan_shows_unified_diffs_and_changes_nothing() {
    let root = fixture("ubuntu-cilium");
    let r = root.path();
    let before = snapshot(r);
    let out = ok(r, &["plan"]);
    assert!(
        out.contains(
            "--- a/etc/rancher/k3s/audit-policy.yaml\n+++ b/etc/rancher/k3s/audit-policy.yaml"
        ),
        "{out}"
    );
    assert!(
        out.contains("-# hand-written policy from before sightline"),
        "{out}"
    );
    assert!(out.contains("+kube-apiserver-arg+:"), "{out}");
    assert_eq!(snapshot(r), before, "plan must not write");
}

#[test]
fn drift_is_repaired_and_counted_as_such() {
    let root = fixture("pi4");
    let r = root.path();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    write(
        r,
        POLICY,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n",
    );
    let plan = ok(r, &["plan"]);
    assert!(plan.contains("repair") && plan.contains(POLICY), "{plan}");
    ok(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(
        read(r, POLICY),
        std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap()
    );
    let state: Value = serde_json::from_str(&read(r, STATE)).unwrap();
    assert_eq!(state["counters"]["drift_repairs"], 1);
}

#[test]
fn uninstall_restores_a_preexisting_file_and_removes_the_rest() {
    let root = fixture("ubuntu-cilium");
    let r = root.path();
    let original = read(r, POLICY);
    std::fs::set_permissions(
        r.join(POLICY.trim_start_matches('/')),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    ok(r, &["apply", "--no-restart", "--host-only"]);
    assert_ne!(read(r, POLICY), original);
    let out = ok(r, &["uninstall", "--no-restart"]);
    assert!(out.contains("restore"), "{out}");
    assert_eq!(read(r, POLICY), original);
    assert_eq!(mode(r, POLICY), 0o640, "the original mode comes back too");
    assert!(!r.join(DROPIN.trim_start_matches('/')).exists());
    assert!(!r.join(WATCHDOG.trim_start_matches('/')).exists());
    // k3s never loaded the audit flags (every apply ran with --no-restart),
    // so taking them away needs no restart either.
    assert!(!out.contains("restart k3s.service"), "{out}");
    assert!(out.contains("disarm the runtime watchdog"), "{out}");
    assert!(
        !out.contains("RuntimeWatchdogUSec=30s"),
        "the superseded watchdog value is not listed: {out}"
    );
}

#[test]
fn bad_config_names_file_line_column_and_writes_nothing() {
    let root = fixture("pi4");
    let r = root.path();
    write(
        r,
        "/etc/sightline/config.d/50-local.toml",
        "[watchdog]\nenabled = true\ntimeout_secs = 10\n",
    );
    let before = snapshot(r);
    let out = sightline(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/etc/sightline/config.d/50-local.toml:3:1"),
        "{err}"
    );
    assert!(
        err.contains("timeout_seconds") && err.contains("fix:"),
        "says what is expected: {err}"
    );
    assert_eq!(snapshot(r), before, "nothing may be written");

    write(
        r,
        "/etc/sightline/config.d/50-local.toml",
        "[loki]\nretention_days = \"two weeks\"\n",
    );
    let err = String::from_utf8_lossy(&sightline(r, &["plan"]).stderr).into_owned();
    assert!(err.contains("50-local.toml:2:18"), "{err}");

    write(
        r,
        "/etc/sightline/config.d/50-local.toml",
        "[throttle]\ninterval_seconds = 1\n",
    );
    let err =
        String::from_utf8_lossy(&sightline(r, &["apply", "--no-restart", "--host-only"]).stderr)
            .into_owned();
    assert!(
        err.contains("50-local.toml:2:1") && err.contains("between 5 and 3600"),
        "{err}"
    );
}

#[test]
fn bad_custom_policy_is_refused_before_anything_is_written() {
    let root = fixture("pi4");
    let r = root.path();
    write(
        r,
        "/etc/sightline/my-policy.yaml",
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Verbose\n",
    );
    write(
        r,
        "/etc/sightline/config.toml",
        "[audit]\npolicy_source = \"/etc/sightline/my-policy.yaml\"\n",
    );
    let before = snapshot(r);
    let out = sightline(r, &["apply", "--no-restart", "--host-only"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("my-policy.yaml")
            && err.contains("Verbose")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(snapshot(r), before);
}

#[test]
fn config_command_shows_origins() {
    let root = fixture("pi4");
    let r = root.path();
    write(
        r,
        "/etc/sightline/config.toml",
        "[k3s]\nready_timeout_seconds = 120\n",
    );
    write(
        r,
        "/usr/lib/sightline/config.d/10-vendor.toml",
        "[loki]\nretention_days = 21\n",
    );
    let out = ok(r, &["config"]);
    assert!(
        out.contains("ready_timeout_seconds = 120  # /etc/sightline/config.toml:2:1"),
        "{out}"
    );
    assert!(
        out.contains("retention_days = 21  # /usr/lib/sightline/config.d/10-vendor.toml:2:1"),
        "{out}"
    );
    assert!(
        out.contains("api_url = \"https://127.0.0.1:6443\"  # default"),
        "{out}"
    );
}

fn collect(root: &std::path::Path, word: &str) -> String {
    write(
        root,
        "/sys/devices/platform/soc/soc:firmware/get_throttled",
        &format!("{word}\n"),
    );
    ok(root, &["collect-throttle"]);
    read(
        root,
        "/run/node_exporter/textfile_collector/rpi_throttle.prom",
    )
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[test]
fn collector_decodes_throttle_words_and_promtool_accepts_them() {
    let root = fixture("pi4");
    let r = root.path();
    std::fs::remove_dir_all(r.join("run/node_exporter")).ok();
    let cases: [(&str, [u8; 8]); 3] = [
        ("0", [0, 0, 0, 0, 0, 0, 0, 0]),
        ("50005", [1, 1, 0, 0, 1, 1, 0, 0]),
        ("80008", [0, 0, 0, 0, 0, 0, 1, 1]),
    ];
    let names = [
        "rpi_under_voltage_now",
        "rpi_under_voltage_occurred",
        "rpi_freq_capped_now",
        "rpi_freq_capped_occurred",
        "rpi_throttled_now",
        "rpi_throttled_occurred",
        "rpi_soft_temp_limit_now",
        "rpi_soft_temp_limit_occurred",
    ];
    for (word, expect) in cases {
        let text = collect(r, word);
        for (n, e) in names.iter().zip(expect) {
            assert_eq!(gauge(&text, n), Some(f64::from(e)), "{word}: {n}\n{text}");
            assert!(
                text.contains(&format!("# TYPE {n} gauge"))
                    && text.contains(&format!("# HELP {n} "))
            );
        }
        assert_eq!(gauge(&text, "rpi_soc_temp_celsius"), Some(61.835));
        assert_eq!(
            gauge(&text, "rpi_core_volts"),
            None,
            "no vcgencmd on this root"
        );
        if tool("promtool") {
            let out = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(
                    std::fs::File::open(
                        r.join("run/node_exporter/textfile_collector/rpi_throttle.prom"),
                    )
                    .unwrap(),
                )
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(r.join("run/node_exporter/textfile_collector"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        vec!["rpi_throttle.prom".to_string()],
        "atomic write leaves no temp file"
    );
}

#[test]
fn collector_falls_back_to_vcgencmd_with_core_volts() {
    let root = fixture("pi4");
    let r = root.path();
    std::fs::remove_file(r.join("sys/devices/platform/soc/soc:firmware/get_throttled")).unwrap();
    write(
        r,
        "/usr/bin/vcgencmd",
        "#!/bin/sh\ncase \"$1\" in\n  get_throttled) echo throttled=0x50005 ;;\n  measure_volts) echo volt=0.8563V ;;\n  *) exit 1 ;;\nesac\n",
    );
    std::fs::set_permissions(
        r.join("usr/bin/vcgencmd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(s(&detect(r)["throttle_source"]), "vcgencmd");
    ok(r, &["collect-throttle", "--output", "/tmp/out/x.prom"]);
    let text = read(r, "/tmp/out/x.prom");
    assert_eq!(gauge(&text, "rpi_under_voltage_now"), Some(1.0));
    assert_eq!(gauge(&text, "rpi_core_volts"), Some(0.8563));
}

#[test]
fn collector_without_source_explains() {
    let root = fixture("nok3s");
    let out = sightline(root.path(), &["collect-throttle"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Raspberry Pi"));
}

/// `detect` tells a Pi user when k3s will not start for want of the memory
/// cgroup, and how to fix it.
#[test]
fn detect_shows_the_memory_cgroup_prerequisite_and_its_fix() {
    let ok_root = fixture("pi4");
    let text = ok(ok_root.path(), &["detect"]);
    assert!(text.contains("memory (what k3s needs)"), "{text}");
    assert_eq!(detect(ok_root.path())["cgroups_ready"], true);
    let bad = fixture("pi4-no-memory-cgroup");
    let text = ok(bad.path(), &["detect"]);
    assert!(text.contains("k3s will not start"), "{text}");
    assert!(
        text.contains("cgroup_memory=1 cgroup_enable=memory") && text.contains("cmdline.txt"),
        "{text}"
    );
    assert_eq!(detect(bad.path())["cgroups_ready"], false);
}
