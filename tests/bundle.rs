//! The in-cluster bundle: integrity, rendering, and proof by the real
//! validators (kubernetes-validate, CRD schemas, promtool, amtool).

mod common;
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_yaml_ng::Value;

/// Renders a fixture (with extra config) into a fresh directory.
fn render(
    fixture_name: &str,
    config: &str,
    args: &[&str],
) -> (tempfile::TempDir, tempfile::TempDir) {
    let root = match fixture_name {
        "pi4-8gb" => {
            let r = fixture("pi4");
            write(
                r.path(),
                "/proc/meminfo",
                "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
            );
            r
        }
        name => fixture(name),
    };
    if !config.is_empty() {
        write(root.path(), "/etc/sightline/config.toml", config);
    }
    store_password(root.path());
    let out = tempfile::tempdir().unwrap();
    let mut a = vec!["render", "--out", out.path().to_str().unwrap()];
    a.extend_from_slice(args);
    ok(root.path(), &a);
    (root, out)
}

/// The Grafana and Uptime Kuma passwords as the first cluster pass of
/// `apply` stores them (43 characters, 0600): `render` only reads them, and
/// without them renders one-off ones, so renders are comparable only once
/// they exist.
fn store_password(root: &Path) {
    for (p, pw) in [
        (
            "/var/lib/sightline/secrets/grafana-admin-password",
            "m9yLXRlc3RzLW9ubHktbm90LWEtcmVhbC1wYXNzd29y\n",
        ),
        (
            "/var/lib/sightline/secrets/uptime-kuma-admin-password",
            "a3VtYS10ZXN0cy1vbmx5LW5vdC1hLXJlYWwtcGFzc3c\n",
        ),
    ] {
        write(root, p, pw);
        std::fs::set_permissions(
            root.join(p.trim_start_matches('/')),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

const ALL_FULL_CILIUM: [&str; 13] = [
    "sightline-10-namespaces.yaml",
    "sightline-15-secrets.yaml",
    "sightline-20-loki.yaml",
    "sightline-30-alloy.yaml",
    "sightline-40-kube-prometheus-stack.yaml",
    "sightline-50-tetragon.yaml",
    "sightline-51-tetragon-policies.yaml",
    "sightline-60-trivy-operator.yaml",
    "sightline-70-kubescape.yaml",
    "sightline-80-kube-bench.yaml",
    "sightline-90-alert-rules.yaml",
    "sightline-91-loki-rules.yaml",
    "sightline-95-uptime-kuma.yaml",
];

#[test]
fn stages_follow_tier_and_decisions() {
    let (_r, out) = render("ubuntu-cilium", "", &[]);
    // Exactly these, in this order: Tetragon on Cilium, no NetworkPolicy
    // stage on Cilium, nothing of the light tier.
    assert_eq!(names(out.path()), ALL_FULL_CILIUM);

    let (_r, out) = render("pi4", "", &[]);
    assert_eq!(names(out.path()), LIGHT_PI4_STAGES);

    // The Pi gets Falco's kernel-module driver (no BTF); Loki's retention is set from config.
    let falco = std::fs::read_to_string(out.path().join("sightline-50-falco.yaml")).unwrap();
    assert!(falco.contains("\"driver.kind\": \"kmod\""), "{falco}");
    let loki = std::fs::read_to_string(out.path().join("sightline-20-loki.yaml")).unwrap();
    assert!(
        loki.contains("\"loki.limits_config.retention_period\": \"336h\""),
        "14 days default: {loki}"
    );

    // A GPU switches on dcgm-exporter.
    let root = fixture("flatcar");
    write(root.path(), "/dev/nvidia0", "");
    let out = tempfile::tempdir().unwrap();
    ok(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    assert!(names(out.path()).contains(&"sightline-45-dcgm-exporter.yaml".to_string()));
}

#[test]
fn names_are_unique_rfc1123_and_renders_are_deterministic() {
    let (root, out) = render("ubuntu-cilium", "", &[]);
    let mut bases = BTreeSet::new();
    for n in names(out.path()) {
        // k3s names the Addon after the file name up to its first dot.
        let base = n.split('.').next().unwrap().to_string();
        assert!(base.starts_with("sightline-"), "{n}");
        assert!(
            base.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
        assert!(bases.insert(base), "duplicate base name {n}");
    }
    let again = tempfile::tempdir().unwrap();
    ok(
        root.path(),
        &["render", "--out", again.path().to_str().unwrap()],
    );
    for f in names(out.path()) {
        assert_eq!(
            std::fs::read(out.path().join(&f)).unwrap(),
            std::fs::read(again.path().join(&f)).unwrap(),
            "{f} differs between renders"
        );
    }
}

#[test]
fn helmcharts_pin_versions_and_fail_fast() {
    let (_r, out) = render("ubuntu-cilium", "", &[]);
    let idx: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("files/bundle/index.toml")).unwrap())
            .unwrap();
    let charts = idx["charts"].as_table().unwrap();
    let mut seen = 0;
    for f in files(out.path()) {
        for d in docs(&f) {
            if d["kind"].as_str() != Some("HelmChart") {
                continue;
            }
            seen += 1;
            let name = d["metadata"]["name"].as_str().unwrap();
            let pin = &charts[name];
            assert_eq!(
                d["spec"]["version"].as_str(),
                pin["version"].as_str(),
                "{name}"
            );
            assert_eq!(d["spec"]["repo"].as_str(), pin["repo"].as_str(), "{name}");
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("kube-system"));
            assert_eq!(d["spec"]["backOffLimit"].as_u64(), Some(3), "{name}");
            assert!(d["spec"]["timeout"].as_str().unwrap().ends_with('m'));
            assert!(
                d["spec"]["targetNamespace"].is_string()
                    && d["spec"]["createNamespace"].as_bool() == Some(true)
            );
            let values: Value =
                serde_yaml_ng::from_str(d["spec"]["valuesContent"].as_str().unwrap()).unwrap();
            assert!(values.is_mapping(), "{name}: values parse as a mapping");
        }
    }
    assert!(seen >= 6, "{seen}");
}

#[test]
fn airgap_points_charts_at_k3s_static_directory() {
    let root = fixture("pi4");
    write(
        root.path(),
        "/etc/sightline/config.toml",
        "[bundle]\nairgap_charts_dir = \"/srv/charts\"\n",
    );
    std::fs::create_dir_all(root.path().join("srv/charts")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let fail = sightline(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    assert!(!fail.status.success());
    assert!(
        String::from_utf8_lossy(&fail.stderr).contains("missing from /srv/charts"),
        "{}",
        String::from_utf8_lossy(&fail.stderr)
    );
    stack::write_airgap_charts(root.path(), "/srv/charts");
    ok(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    let loki = std::fs::read_to_string(out.path().join("sightline-20-loki.yaml")).unwrap();
    assert!(
        loki.contains("\"chart\": \"https://%{KUBERNETES_API}%/static/charts/loki-18.11.0.tgz\""),
        "{loki}"
    );
    assert!(!loki.contains("\"repo\""), "no repository in airgap mode");
}

#[test]
fn secrets_are_read_from_the_store_kept_0600_and_never_in_values() {
    let (root, out) = render("pi4", "", &[]);
    let pw_path = root
        .path()
        .join("var/lib/sightline/secrets/grafana-admin-password");
    let pw = std::fs::read_to_string(&pw_path)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(pw.len(), 43);
    assert_eq!(
        mode(
            root.path(),
            "/var/lib/sightline/secrets/grafana-admin-password"
        ),
        0o600
    );
    assert_eq!(
        mode(out.path(), "/sightline-15-secrets.yaml"),
        0o600,
        "the stage holding Secrets is 0600"
    );
    let mut found_secret = false;
    for f in files(out.path()) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&pw), "plain password in {}", f.display());
        for d in docs(&f) {
            if d["kind"].as_str() == Some("Secret")
                && d["metadata"]["name"].as_str() == Some("sightline-grafana-admin")
            {
                use base64::Engine;
                let got = base64::engine::general_purpose::STANDARD
                    .decode(d["data"]["admin-password"].as_str().unwrap())
                    .unwrap();
                assert_eq!(String::from_utf8(got).unwrap(), pw);
                found_secret = true;
            }
        }
    }
    assert!(found_secret);
    // Values reference the Secret; they never carry a password.
    for entry in std::fs::read_dir(repo().join("files/bundle/values")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let l = line.trim().to_ascii_lowercase();
            assert!(
                !(l.starts_with("password:") || l.starts_with("adminpassword:"))
                    || l.ends_with("\"\"")
                    || l.ends_with(':'),
                "{line}"
            );
        }
    }
    let kps =
        std::fs::read_to_string(repo().join("files/bundle/values/kube-prometheus-stack.yaml"))
            .unwrap();
    assert!(
        kps.contains("existingSecret: sightline-grafana-admin"),
        "Grafana reads the generated Secret"
    );
    // A second render keeps the same password.
    let again = tempfile::tempdir().unwrap();
    ok(
        root.path(),
        &["render", "--out", again.path().to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&pw_path).unwrap().trim(), pw);
}

#[test]
fn nothing_is_nodeport_or_loadbalancer() {
    for (fx, cfg) in [("ubuntu-cilium", ""), ("pi4", "")] {
        let (_r, out) = render(fx, cfg, &[]);
        for f in files(out.path()) {
            let text = std::fs::read_to_string(&f).unwrap();
            for bad in ["NodePort", "LoadBalancer"] {
                assert!(
                    !text.contains(&format!("type: {bad}"))
                        && !text.contains(&format!("\"type\": \"{bad}\"")),
                    "{bad} in {}",
                    f.display()
                );
            }
        }
    }
}

/// Every container in plain manifests and HelmChart-less stages has requests and limits.
#[test]
fn plain_manifest_containers_have_requests_and_limits() {
    for entry in std::fs::read_dir(repo().join("files/bundle/manifests")).unwrap() {
        let p = entry.unwrap().path();
        for d in docs(&p) {
            let spec = match d["kind"].as_str() {
                Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job") => {
                    &d["spec"]["template"]["spec"]
                }
                Some("CronJob") => &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => continue,
            };
            for key in ["containers", "initContainers"] {
                for c in spec[key]
                    .as_sequence()
                    .map(|s| s.as_slice())
                    .unwrap_or_default()
                {
                    let r = &c["resources"];
                    // Requests for both; a memory limit always. A CPU limit
                    // is optional: it only throttles, never protects the node.
                    for (k, res) in [
                        ("requests", "cpu"),
                        ("requests", "memory"),
                        ("limits", "memory"),
                    ] {
                        assert!(
                            !r[k][res].is_null(),
                            "{}: container {:?} has no {k}.{res}",
                            p.display(),
                            c["name"]
                        );
                    }
                }
            }
        }
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn variants() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        ("pi4", "", vec![]),
        // The full tier on Pi hardware (Falco kmod driver): an 8 GB Pi 4, since
        // a 4 GB one cannot hold the full tier's requests (tests/footprint.rs).
        (
            "pi4-8gb",
            "[alerting]\nntfy_url = \"https://ntfy.sh/homelab\"\n[grafana]\nlan_cidrs = [\"192.168.1.0/24\"]\n",
            vec!["--tier", "full"],
        ),
        (
            "ubuntu-cilium",
            "[alerting]\ndiscord_webhook_url = \"https://discord.com/api/webhooks/1/x\"\nemail_to = \"me@example.org\"\nsmtp_smarthost = \"192.0.2.10:587\"\nsmtp_from = \"k3s@example.org\"\n",
            vec![],
        ),
        ("flatcar", "", vec![]),
        (
            "flatcar",
            "runtime_security = \"none\"\n",
            vec!["--tier", "light"],
        ),
    ]
}

#[test]
fn every_builtin_object_passes_kubernetes_validate_strict() {
    for (fx, cfg, args) in variants() {
        let (_r, out) = render(fx, cfg, &args);
        let (okay, log) = run(Command::new(repo().join("scripts/validate/k8s"))
            .arg("-k")
            .arg("1.33.0")
            .arg("-k")
            .arg("1.37.0")
            .arg(out.path()));
        assert!(okay, "{fx} {args:?}:\n{log}");
    }
}

#[test]
fn every_crd_object_passes_its_schema() {
    if !tool("node") {
        return;
    }
    assert!(
        repo().join("scripts/validate/node_modules").is_dir(),
        "run scripts/test-deps (npm ci in scripts/validate)"
    );
    for (fx, cfg, args) in variants() {
        let (_r, out) = render(fx, cfg, &args);
        let (okay, log) = run(Command::new("node")
            .arg(repo().join("scripts/validate/crds.mjs"))
            .arg("--helm-controller")
            .arg("v0.17.7")
            .arg(out.path()));
        assert!(okay, "{fx} {args:?}:\n{log}");
    }
    // The checker itself rejects what it should.
    let (okay, log) = run(&mut Command::new(repo().join("scripts/validate/selftest")));
    assert!(okay, "{log}");
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    if !tool("promtool") {
        return;
    }
    let (okay, log) = run(&mut Command::new(repo().join("scripts/check-alerts")));
    assert!(okay, "{log}");
    assert!(log.contains("SUCCESS"), "{log}");
}

/// The rendered secrets stage's documents, by Secret name.
fn generated_secrets(root: &Path, args: &[&str]) -> BTreeMap<String, BTreeMap<String, String>> {
    use base64::Engine;
    let out = tempfile::tempdir().unwrap();
    let mut a = vec!["render", "--out", out.path().to_str().unwrap()];
    a.extend_from_slice(args);
    ok(root, &a);
    let mut secrets = BTreeMap::new();
    for d in docs(&out.path().join("sightline-15-secrets.yaml")) {
        if d["kind"].as_str() != Some("Secret") {
            continue;
        }
        let mut data = BTreeMap::new();
        for (k, v) in d["data"].as_mapping().into_iter().flatten() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            data.insert(
                k.as_str().unwrap().to_string(),
                String::from_utf8(raw).unwrap(),
            );
        }
        secrets.insert(d["metadata"]["name"].as_str().unwrap().to_string(), data);
    }
    secrets
}

fn am_config(root: &Path) -> String {
    generated_secrets(root, &[])["sightline-alertmanager"]["alertmanager.yaml"].clone()
}

/// amtool from Debian trixie (0.28.1), unpacked by scripts/test-deps.
/// bookworm's 0.25 predates `webhook_url_file` on discord_configs (0.27),
/// which the light tier's configuration uses; the charts ship Alertmanager
/// 0.34.0 (full) and 0.32.1 (light), so 0.28 is the closer check anyway.
fn amtool() -> Option<PathBuf> {
    let cache = std::env::var_os("SIGHTLINE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("sightline")))
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sightline"));
    let bin = cache.join("alertmanager-trixie/root/usr/bin/amtool");
    available(
        bin.is_file(),
        "amtool 0.28 is not set up (scripts/test-deps unpacks it)",
    )
    .then_some(bin)
}

fn amtool_route(amtool: &Path, cfg: &Path, labels: &[&str]) -> String {
    let out = Command::new(amtool)
        .args(["config", "routes", "test", "--config.file"])
        .arg(cfg)
        .args(labels)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `text` to a temporary file and runs `amtool check-config` on it.
fn amtool_check(amtool: &Path, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("alertmanager.yaml");
    std::fs::write(&f, text).unwrap();
    let (okay, log) = run(Command::new(amtool).args(["check-config"]).arg(&f));
    assert!(okay, "{log}\n{text}");
    (dir, f)
}

/// A secret file as an administrator leaves it: 0600.
fn write_secret(root: &Path, host: &str, content: &str) {
    write(root, host, content);
    std::fs::set_permissions(
        root.join(host.trim_start_matches('/')),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

#[test]
fn alertmanager_routes_critical_everywhere_and_groups_warnings() {
    let Some(amtool) = amtool() else {
        return;
    };
    let cases: [(&str, &str); 3] = [
        ("", "default"),
        (
            "[alerting]\nntfy_url = \"https://ntfy.example.org/alerts\"\n",
            "ntfy",
        ),
        (
            "[alerting]\nntfy_url = \"https://ntfy.sh/homelab\"\ndiscord_webhook_url = \"https://discord.com/api/webhooks/1/abc\"\nemail_to = \"me@example.org\"\nsmtp_smarthost = \"mail.example.org:587\"\nsmtp_from = \"k3s@example.org\"\nsmtp_auth_username = \"k3s\"\nsmtp_auth_password_file = \"/etc/sightline/smtp-password\"\n",
            "ntfy,discord,email",
        ),
    ];
    for (config, receivers) in cases {
        let root = fixture("pi4");
        write(root.path(), "/etc/sightline/config.toml", config);
        write_secret(root.path(), "/etc/sightline/smtp-password", "s3cret-smtp\n");
        let text = am_config(root.path());
        let (_dir, f) = amtool_check(&amtool, &text);
        assert_eq!(
            amtool_route(
                &amtool,
                &f,
                &["severity=critical", "alertname=NodeHighMemory"]
            ),
            receivers,
            "critical goes to every receiver"
        );
        assert_eq!(
            amtool_route(&amtool, &f, &["severity=warning", "alertname=NodeHighCPU"]),
            receivers
        );
        // kube-prometheus-stack's default route for its heartbeat, and
        // sightline's light-tier rule has the same labels.
        for labels in [
            ["alertname=Watchdog", "severity=none"],
            ["alertname=Watchdog", "severity=critical"],
        ] {
            assert_eq!(
                amtool_route(&amtool, &f, &labels),
                "null",
                "the heartbeat never pages"
            );
        }
        let v: Value = serde_yaml_ng::from_str(&text).unwrap();
        let null = v["receivers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str() == Some("null"))
            .expect("a null receiver");
        assert_eq!(
            null.as_mapping().unwrap().len(),
            1,
            "null has no integration: {null:?}"
        );
        let warn = v["route"]["routes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| r["matchers"][0].as_str() == Some("severity=\"warning\""))
            .unwrap();
        assert_eq!(
            warn["repeat_interval"].as_str(),
            Some("12h"),
            "warnings repeat at most every 12h"
        );
        assert!(
            warn["group_by"].as_sequence().unwrap().len() >= 2,
            "warnings are grouped"
        );
        let inhibit = v["inhibit_rules"].as_sequence().unwrap();
        assert!(
            inhibit
                .iter()
                .any(|r| r["equal"][0].as_str() == Some("node")
                    && r["source_matchers"][0]
                        .as_str()
                        .unwrap()
                        .contains("NodeNotReady")),
            "node down suppresses pod alerts on that node"
        );
        if config.contains("smtp_auth_password_file") {
            assert!(!text.contains("s3cret-smtp"), "{text}");
            assert_eq!(
                v["global"]["smtp_auth_password_file"].as_str(),
                Some("/etc/vm/secrets/sightline-alertmanager-files/smtp-auth-password")
            );
        }
    }
}

/// Every `*_file` key of `[alerting]` reaches the in-cluster Alertmanager as
/// a file in the Secret its pod mounts, where the tier's operator lets the
/// configuration name it; `amtool check-config` accepts both tiers'
/// configurations.
#[test]
fn alertmanager_reads_credentials_from_the_mounted_secret() {
    let Some(amtool) = amtool() else {
        return;
    };
    let config = "[alerting]\nntfy_url = \"https://ntfy.example.org/alerts\"\nntfy_token_file = \"/etc/sightline/ntfy-token\"\ndiscord_webhook_url_file = \"/etc/sightline/discord-url\"\nemail_to = \"me@example.org\"\nsmtp_smarthost = \"192.0.2.25:587\"\nsmtp_from = \"k3s@example.org\"\nsmtp_auth_username = \"k3s\"\nsmtp_auth_password_file = \"/etc/sightline/smtp-password\"\n";
    let url = "https://discord.com/api/webhooks/42/t0ken-in-the-url";
    // (tier, fixture, args, mount directory, the Discord URL in a file)
    let tiers = [
        (
            "light",
            "pi4",
            vec![],
            "/etc/vm/secrets/sightline-alertmanager-files",
            true,
        ),
        (
            "full",
            "pi4-8gb",
            vec!["--tier", "full"],
            "/etc/alertmanager/secrets/sightline-alertmanager-files",
            false,
        ),
    ];
    for (tier, fx, args, dir, discord_file) in tiers {
        let root = match fx {
            "pi4-8gb" => {
                let r = fixture("pi4");
                write(
                    r.path(),
                    "/proc/meminfo",
                    "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
                );
                r
            }
            other => fixture(other),
        };
        write(root.path(), "/etc/sightline/config.toml", config);
        write_secret(root.path(), "/etc/sightline/ntfy-token", "tk_ntfy\n");
        write_secret(
            root.path(),
            "/etc/sightline/discord-url",
            &format!("{url}\n"),
        );
        write_secret(root.path(), "/etc/sightline/smtp-password", "s3cret-smtp\n");
        let secrets = generated_secrets(root.path(), &args);
        let text = &secrets["sightline-alertmanager"]["alertmanager.yaml"];
        let (_d, f) = amtool_check(&amtool, text);
        assert_eq!(
            amtool_route(&amtool, &f, &["severity=critical", "alertname=X"]),
            "ntfy,discord,email",
            "{tier}"
        );
        let v: Value = serde_yaml_ng::from_str(text).unwrap();
        let receiver = |name: &str| -> Value {
            v["receivers"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|r| r["name"].as_str() == Some(name))
                .cloned()
                .unwrap_or_else(|| panic!("{tier}: no receiver {name}"))
        };
        let files = &secrets["sightline-alertmanager-files"];
        assert_eq!(
            v["global"]["smtp_auth_password_file"].as_str(),
            Some(format!("{dir}/smtp-auth-password").as_str()),
            "{tier}"
        );
        assert_eq!(files["smtp-auth-password"], "s3cret-smtp");
        assert_eq!(
            receiver("ntfy")["webhook_configs"][0]["http_config"]["authorization"]
                ["credentials_file"]
                .as_str(),
            Some(format!("{dir}/ntfy-token").as_str()),
            "{tier}"
        );
        assert_eq!(files["ntfy-token"], "tk_ntfy");
        let discord = &receiver("discord")["discord_configs"][0];
        if discord_file {
            assert_eq!(
                discord["webhook_url_file"].as_str(),
                Some(format!("{dir}/discord-webhook-url").as_str())
            );
            assert_eq!(files["discord-webhook-url"], url);
        } else {
            // prometheus-operator rejects webhook_url_file: the URL stays
            // in the configuration Secret.
            assert_eq!(discord["webhook_url"].as_str(), Some(url), "{tier}");
            assert!(!files.contains_key("discord-webhook-url"), "{files:?}");
        }
        for secret in ["s3cret-smtp", "tk_ntfy"] {
            assert!(!text.contains(secret), "{tier}: {secret} inline:\n{text}");
        }
        assert_eq!(text.contains("t0ken-in-the-url"), !discord_file, "{tier}");
    }

    // No credential at all: the Secret the pods mount still exists, empty.
    let root = fixture("pi4");
    let secrets = generated_secrets(root.path(), &[]);
    assert_eq!(secrets["sightline-alertmanager-files"], BTreeMap::new());
}

/// Both charts mount the credentials Secret where the configuration looks.
#[test]
fn both_charts_mount_the_alertmanager_files_secret() {
    for (fx, args, stage, path) in [
        (
            "pi4",
            vec![],
            "sightline-40-victoria-metrics.yaml",
            ["alertmanager", "spec", "secrets"],
        ),
        (
            "pi4-8gb",
            vec!["--tier", "full"],
            "sightline-40-kube-prometheus-stack.yaml",
            ["alertmanager", "alertmanagerSpec", "secrets"],
        ),
    ] {
        let (_r, out) = render(fx, "", &args);
        let chart = docs(&out.path().join(stage))
            .into_iter()
            .find(|d| d["kind"].as_str() == Some("HelmChart"))
            .unwrap();
        let values: Value =
            serde_yaml_ng::from_str(chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
        let mut v = &values;
        for k in path {
            v = &v[k];
        }
        assert_eq!(
            v.as_sequence()
                .map(|s| s.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>()),
            Some(vec!["sightline-alertmanager-files"]),
            "{stage}"
        );
    }
}

/// A secret file that every user can read is refused for the cluster too,
/// naming the key and the fix.
#[test]
fn a_world_readable_secret_file_is_refused_for_the_cluster() {
    let root = fixture("pi4");
    write(
        root.path(),
        "/etc/sightline/config.toml",
        "[alerting]\ndiscord_webhook_url_file = \"/etc/sightline/discord-url\"\n",
    );
    write(
        root.path(),
        "/etc/sightline/discord-url",
        "https://discord.com/api/webhooks/1/x\n",
    );
    std::fs::set_permissions(
        root.path().join("etc/sightline/discord-url"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = sightline(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("alerting.discord_webhook_url_file") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(
        !err.contains("webhooks/1/x"),
        "the URL is never printed: {err}"
    );
}

#[test]
fn detect_and_status_warn_when_nobody_will_be_woken() {
    let root = fixture("pi4");
    let d = detect(root.path());
    assert!(
        d["warnings"].to_string().contains("nobody will be woken"),
        "{d}"
    );
    write(
        root.path(),
        "/etc/sightline/config.toml",
        "[alerting]\nntfy_url = \"https://ntfy.sh/x\"\n",
    );
    let d = detect(root.path());
    assert!(
        !d["warnings"].to_string().contains("nobody will be woken"),
        "{d}"
    );
}

/// Flattens a YAML mapping into key paths; lists are leaves.
fn flatten(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Mapping(m) = v {
        for (k, val) in m {
            let k = match k {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
            };
            let seg = if k.contains('.') {
                format!("\"{k}\"")
            } else {
                k
            };
            let p = if prefix.is_empty() {
                seg
            } else {
                format!("{prefix}.{seg}")
            };
            if val.is_mapping() && !val.as_mapping().unwrap().is_empty() {
                flatten(val, &p, out);
            } else {
                out.insert(p);
            }
        }
    }
}

#[test]
fn values_use_only_keys_recorded_from_the_pinned_charts() {
    let idx: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("files/bundle/index.toml")).unwrap())
            .unwrap();
    let charts = idx["charts"].as_table().unwrap();
    let mut by_release: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(repo().join("files/bundle/values")).unwrap() {
        let p = e.unwrap().path();
        let release = p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split('.')
            .next()
            .unwrap()
            .to_string();
        by_release.entry(release).or_default().push(p);
    }
    for (release, pin) in charts {
        assert!(
            by_release.contains_key(release),
            "chart {release} has no values file"
        );
        let keys_text =
            std::fs::read_to_string(repo().join(format!("tests/data/chart-keys/{release}.keys")))
                .unwrap_or_else(|_| panic!("tests/data/chart-keys/{release}.keys is missing"));
        let header = keys_text
            .lines()
            .find(|l| l.starts_with("# chart:"))
            .unwrap();
        assert_eq!(
            header,
            format!(
                "# chart: {} {}",
                pin["chart"].as_str().unwrap(),
                pin["version"].as_str().unwrap()
            ),
            "{release}: the key record must be for the pinned version"
        );
        assert!(
            keys_text.lines().any(|l| l.starts_with("# source: ")),
            "{release}: record says where keys were checked"
        );
        let mut exact = BTreeSet::new();
        let mut open = Vec::new();
        for line in keys_text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let mut cols = line.split('\t');
            let path = cols.next().unwrap().trim().to_string();
            let lineno = cols.next().map(str::trim).unwrap_or_default();
            assert!(
                lineno.parse::<u32>().is_ok() || lineno.starts_with('['),
                "{release}: {line:?} names no line"
            );
            match path.strip_suffix(".*") {
                Some(p) => open.push(p.to_string()),
                None => {
                    exact.insert(path);
                }
            }
        }
        for file in &by_release[release] {
            let v: Value =
                serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            let mut paths = BTreeSet::new();
            flatten(&v, "", &mut paths);
            for p in paths {
                let covered = exact.contains(&p)
                    || open
                        .iter()
                        .any(|o| p == *o || p.starts_with(&format!("{o}.")));
                assert!(
                    covered,
                    "{}: key {p} is not recorded in {release}.keys",
                    file.display()
                );
            }
        }
    }
    for release in by_release.keys() {
        assert!(
            charts.contains_key(release),
            "values for {release}, but index.toml pins no such chart"
        );
    }
}

#[test]
fn a_tampered_bundle_is_refused_and_its_files_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["bundle", "export", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let tar_path = dir.path().join("bundle.tar");
    let (okay, log) = run(Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["bundle", "verify"])
        .arg(&tar_path));
    assert!(okay, "{log}");

    let pristine = std::fs::read(&tar_path).unwrap();
    // 1. One byte of one file changed (same length, valid tar).
    let mut bad = pristine.clone();
    let at = find(&bad, b"name: monitoring").expect("namespaces manifest in the archive");
    bad[at + 6] = b'M';
    // 2. A file added that SHA256SUMS does not list.
    let mut extra = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(pristine.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        extra
            .append_data(&mut h, e.path().unwrap(), data.as_slice())
            .unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    extra
        .append_data(&mut h, "manifests/evil.yaml", &b"x: 1"[..3])
        .unwrap();
    let extra = extra.into_inner().unwrap();

    for (what, data, needle) in [
        ("changed byte", bad, "has digest"),
        ("unlisted file", extra, "not listed"),
    ] {
        let f = dir.path().join("bad.tar");
        std::fs::write(&f, &data).unwrap();
        let (okay, log) = run(Command::new(env!("CARGO_BIN_EXE_sightline"))
            .args(["bundle", "verify"])
            .arg(&f));
        assert!(
            !okay && log.contains("refused") && log.contains(needle),
            "{what}: {log}"
        );

        let root = fixture("pi4");
        std::fs::create_dir_all(root.path().join("usr/share/sightline")).unwrap();
        std::fs::write(root.path().join("usr/share/sightline/bundle.tar"), &data).unwrap();
        let outdir = tempfile::tempdir().unwrap();
        let r = sightline(
            root.path(),
            &["render", "--out", outdir.path().to_str().unwrap()],
        );
        assert!(!r.status.success(), "{what}: render must refuse");
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("Nothing from it is used"),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(
            std::fs::read_dir(outdir.path()).unwrap().count(),
            0,
            "{what}: no file written"
        );
    }
    // The pristine export works from the package path.
    let root = fixture("pi4");
    std::fs::create_dir_all(root.path().join("usr/share/sightline")).unwrap();
    std::fs::write(
        root.path().join("usr/share/sightline/bundle.tar"),
        &pristine,
    )
    .unwrap();
    let outdir = tempfile::tempdir().unwrap();
    ok(
        root.path(),
        &["render", "--out", outdir.path().to_str().unwrap()],
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn user_values_overlay_merges_last_and_bad_ones_are_refused() {
    let root = fixture("ubuntu-cilium");
    write(
        root.path(),
        "/etc/sightline/values.d/kube-prometheus-stack.yaml",
        "kubeEtcd:\n  enabled: true\n",
    );
    let out = tempfile::tempdir().unwrap();
    ok(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    let kps = docs(&out.path().join("sightline-40-kube-prometheus-stack.yaml"));
    let hc = kps
        .iter()
        .find(|d| d["kind"].as_str() == Some("HelmChart"))
        .unwrap();
    let values: Value =
        serde_yaml_ng::from_str(hc["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(
        values["kubeEtcd"]["enabled"],
        Value::Bool(true),
        "the user's value wins"
    );
    assert!(
        values["grafana"]["admin"]["existingSecret"].is_string(),
        "the bundle's values stay"
    );
    write(
        root.path(),
        "/etc/sightline/values.d/kube-prometheus-stack.yaml",
        "- not\n- a mapping\n",
    );
    let bad = sightline(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be a YAML mapping"));
}
