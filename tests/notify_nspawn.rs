//! Under a real systemd 252 (nspawn) with the stand-in k3s: how the
//! notifier tells "k3s stopped on purpose" from "k3s down by failure",
//! read over D-Bus exactly as the daemon reads it.

mod common;

use std::time::Duration;

use common::nspawn::{Container, Prepared, Rootfs, install_standin_k3s, show, wait_until};

/// A root with the stand-in k3s and the sightline binary, or `None` (after
/// reporting the skip) where containers cannot run.
fn prepared(hint: &str) -> Option<Prepared> {
    let p = match Container::prepare(hint) {
        Ok(p) => p,
        Err(skip) => {
            skip.report();
            return None;
        }
    };
    install_standin_k3s(&p);
    p.install_file(env!("CARGO_BIN_EXE_sightline"), "/usr/bin/sightline", 0o755);
    Some(p)
}

fn boot() -> Option<Container> {
    let p = prepared("notify")?;
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    wait_until("k3s active", Duration::from_secs(30), || {
        c.sh("systemctl is-active k3s").status.success()
    });
    Some(c)
}

fn k3s_state(c: &Container) -> serde_json::Value {
    let out = c.exec(&["sightline", "notify", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["k3s"].clone()
}

#[test]
fn stopped_on_purpose_is_told_from_stopped_by_failure() {
    let Some(c) = boot() else { return };
    wait_until("k3s ready", Duration::from_secs(30), || {
        k3s_state(&c)["state"] == "ready"
    });

    // A stop job someone started: inactive, Result=success.
    c.sh_ok("systemctl stop k3s");
    let s = k3s_state(&c);
    assert_eq!(s["state"], "on_purpose", "{s}");
    assert_eq!(s["how"], "stopped_by_job", "{s}");
    let text = String::from_utf8_lossy(&c.exec(&["sightline", "notify"]).stdout).into_owned();
    assert!(
        text.contains("k3s: stopped on purpose (it was stopped by a stop job and exited cleanly (inactive, Result=success)); not reported"),
        "{text}"
    );

    // Crash-looping on a configuration the apiserver refuses: systemd
    // restarts it (Restart=always), Result=exit-code.
    c.write_file(
        "/etc/rancher/k3s/config.yaml.d/99-bad.yaml",
        "kube-apiserver-arg+:\n  - audit-policy-file=/nonexistent.yaml\n",
        0o644,
    );
    // (--no-block: the start job itself fails; systemd then restarts it.)
    c.sh_ok("systemctl start --no-block k3s");
    wait_until(
        "down by failure, restarting",
        Duration::from_secs(20),
        || {
            let s = k3s_state(&c);
            s["state"] == "down"
                && s["cause"]["kind"] == "restarting"
                && s["cause"]["detail"] == "exit-code"
        },
    );

    // Failing for good: no more restarts, the unit is failed.
    c.sh_ok(
        "mkdir -p /etc/systemd/system/k3s.service.d && printf '[Service]\\nRestart=no\\n' >/etc/systemd/system/k3s.service.d/no-restart.conf && systemctl daemon-reload",
    );
    wait_until("failed", Duration::from_secs(20), || {
        let s = k3s_state(&c);
        s["cause"]["kind"] == "failed" && s["cause"]["detail"] == "exit-code"
    });

    // Disabled by the administrator: on purpose, whatever its last Result.
    c.sh_ok("systemctl disable k3s");
    let s = k3s_state(&c);
    assert_eq!(s["state"], "on_purpose", "{s}");
    assert_eq!(s["how"], "disabled", "{s}");
}

/// Records POSTs (ntfy and Discord stand-in) as JSON lines; `/fail` answers 500.
const RECORDER: &str = r#"
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with open("/var/lib/rec/requests.jsonl", "a") as f:
            f.write(json.dumps({"path": self.path, "title": self.headers.get("Title"), "auth": self.headers.get("Authorization"), "body": body}) + "\n")
        code = 500 if self.path == "/fail" else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 8099), H).serve_forever()
"#;

fn daemon_container() -> Option<Container> {
    daemon_container_with("notify-daemon", "", |_| {})
}

/// The daemon container, with `extra` appended to `[alerting]` and `setup`
/// run on the root before it boots.
fn daemon_container_with(
    hint: &str,
    extra: &str,
    setup: impl FnOnce(&Prepared),
) -> Option<Container> {
    let p = prepared(hint)?;
    let repo = common::repo();
    p.install_file(
        repo.join("units/sightline.service"),
        "/usr/lib/systemd/system/sightline.service",
        0o644,
    );
    p.install_file(
        repo.join("files/tmpfiles.d/sightline.conf"),
        "/usr/lib/tmpfiles.d/sightline.conf",
        0o644,
    );
    p.write_file("/usr/local/bin/rec.py", RECORDER, 0o755);
    p.write_file(
        "/etc/sightline/discord-url",
        "http://127.0.0.1:8099/fail\n",
        0o600,
    );
    p.write_file(
        "/etc/sightline/config.toml",
        format!("[k3s]\nready_timeout_seconds = 30\n[alerting]\nntfy_url = \"http://127.0.0.1:8099/topic\"\ndiscord_webhook_url_file = \"/etc/sightline/discord-url\"\n{extra}[notify]\nk3s_down_minutes = 1\npoll_seconds = 2\n"),
        0o600,
    );
    setup(&p);
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    c.sh_ok("mkdir -p /var/lib/rec && systemd-run --unit=rec python3 /usr/local/bin/rec.py");
    c.sh_ok("systemctl start sightline");
    wait_until("sightline active", Duration::from_secs(60), || {
        c.sh("systemctl is-active sightline").status.success()
    });
    Some(c)
}

fn posts(c: &Container) -> Vec<serde_json::Value> {
    c.read_file("/var/lib/rec/requests.jsonl")
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ntfy_titles(c: &Container, containing: &str) -> Vec<String> {
    posts(c)
        .iter()
        .filter(|p| p["path"] == "/topic")
        .filter_map(|p| p["title"].as_str().map(str::to_string))
        .filter(|t| t.contains(containing))
        .collect()
}

#[test]
fn the_daemon_reports_k3s_down_by_failure_and_resolved_but_not_a_stop_on_purpose() {
    let Some(c) = daemon_container() else { return };
    wait_until("k3s active", Duration::from_secs(60), || {
        c.sh("systemctl is-active k3s").status.success()
    });

    // Stopped on purpose: nothing, even well past the threshold.
    c.sh_ok("systemctl stop k3s");
    std::thread::sleep(Duration::from_secs(70));
    assert!(ntfy_titles(&c, "k3s is down").is_empty(), "{:?}", posts(&c));
    let text = String::from_utf8_lossy(&c.exec(&["sightline", "notify"]).stdout).into_owned();
    assert!(text.contains("open events: none"), "{text}");

    // Down by failure: a crash loop. Reported within the threshold (1 min)
    // plus one poll (2 s), with some slack for the container.
    c.write_file(
        "/etc/rancher/k3s/config.yaml.d/99-bad.yaml",
        "kube-apiserver-arg+:\n  - audit-policy-file=/nonexistent.yaml\n",
        0o644,
    );
    let t = std::time::Instant::now();
    c.sh_ok("systemctl start --no-block k3s");
    while ntfy_titles(&c, "k3s is down").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no message; posts {:?}\n{}\n{}",
            posts(&c),
            c.sh_ok("journalctl -u sightline --no-pager | tail -40"),
            c.sh_ok("sightline notify; systemctl status k3s --no-pager | head -5")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(58),
        "not before the threshold: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(75),
        "threshold + one poll: {took:?}"
    );
    let sent = ntfy_titles(&c, "k3s is down");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].starts_with("Resolved"), "{sent:?}");
    let body = posts(&c)
        .into_iter()
        .find(|p| {
            p["path"] == "/topic" && p["title"].as_str().unwrap_or("").contains("k3s is down")
        })
        .unwrap();
    assert!(
        body["body"].as_str().unwrap().contains("Result=exit-code"),
        "{body}"
    );

    // The refusing channel (HTTP 500) was retried, counted, and did not
    // hold ntfy back.
    let counts = || -> serde_json::Value {
        serde_json::from_str(
            &c.read_file("/var/lib/sightline/notify/deliveries.json")
                .unwrap_or_else(|| "{}".into()),
        )
        .unwrap()
    };
    wait_until(
        "discord retried and counted",
        Duration::from_secs(30),
        || {
            counts()["counts"]["discord"]["failed"]
                .as_u64()
                .is_some_and(|n| n >= 2)
        },
    );
    assert!(posts(&c).iter().filter(|p| p["path"] == "/fail").count() >= 2);
    let counts = counts();
    assert!(
        counts["counts"]["ntfy"]["sent"].as_u64().unwrap() >= 1,
        "{counts}"
    );
    let prom = c
        .read_file("/run/node_exporter/textfile_collector/sightline_notifications.prom")
        .unwrap();
    assert!(
        prom.contains("sightline_notifications_total{channel=\"discord\",result=\"failed\"}"),
        "{prom}"
    );

    // Back: "resolved".
    c.sh_ok("rm /etc/rancher/k3s/config.yaml.d/99-bad.yaml");
    wait_until("resolved sent", Duration::from_secs(60), || {
        ntfy_titles(&c, "Resolved on")
            .iter()
            .any(|t| t.contains("k3s is down"))
    });
}

/// Makes the daemon's next start find a previous boot that ended without a
/// clean stop: the state says the daemon ran in another boot, and no marker
/// names that boot. The daemon must be stopped.
fn forget_the_clean_stop(c: &Container) {
    let events = c
        .read_file("/var/lib/sightline/notify/events.json")
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&events).unwrap();
    v["running_boot_id"] = serde_json::json!("0000-previous-boot");
    c.write_file(
        "/var/lib/sightline/notify/events.json",
        serde_json::to_string(&v).unwrap(),
        0o600,
    );
}

/// The unit's commented `LoadCredential=` examples, enabled the way its
/// comment says (a drop-in): `systemd-analyze verify` stays silent, the
/// service starts, and the daemon sends with the token from
/// `$CREDENTIALS_DIRECTORY`, since the configured file does not exist.
#[test]
fn the_units_load_credential_examples_reach_the_daemon() {
    let unit = std::fs::read_to_string(common::repo().join("units/sightline.service")).unwrap();
    let names: Vec<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("#LoadCredential="))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["smtp-password", "ntfy-token", "discord-webhook-url"],
        "the examples name the files config.toml suggests"
    );
    // Sources other than the configured paths, so only the credential can
    // have delivered the token.
    let dropin: String = std::iter::once("[Service]\n".to_string())
        .chain(
            names
                .iter()
                .map(|n| format!("LoadCredential={n}:/root/creds/{n}\n")),
        )
        .collect();
    let Some(c) = daemon_container_with(
        "notify-creds",
        "ntfy_token_file = \"/etc/sightline/ntfy-token\"\n",
        |p| {
            for n in &names {
                p.write_file(&format!("/root/creds/{n}"), format!("tk_cred_{n}\n"), 0o600);
            }
            p.write_file(
                "/etc/systemd/system/sightline.service.d/credentials.conf",
                &dropin,
                0o644,
            );
        },
    ) else {
        return;
    };
    assert!(c.read_file("/etc/sightline/ntfy-token").is_none());
    let verify = c.exec(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/usr/lib/systemd/system/sightline.service",
    ]);
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify must print nothing:\n{}",
        show(&verify)
    );
    c.sh_ok("systemctl stop sightline");
    forget_the_clean_stop(&c);
    c.sh_ok("systemctl start sightline");
    wait_until("unclean restart sent", Duration::from_secs(30), || {
        !ntfy_titles(&c, "unclean restart").is_empty()
    });
    let sent: Vec<serde_json::Value> = posts(&c)
        .into_iter()
        .filter(|p| p["path"] == "/topic")
        .collect();
    assert!(
        sent.iter()
            .all(|p| p["auth"] == "Bearer tk_cred_ntfy-token"),
        "{sent:?}"
    );
}

#[test]
fn an_unclean_restart_is_reported_once_on_start() {
    let Some(c) = daemon_container() else { return };
    // A clean stop writes the marker for this boot.
    c.sh_ok("systemctl stop sightline");
    // (It holds the boot ID the service sees; under nspawn that can differ
    // from what a shell in the container reads, so only its presence is
    // checked. What counts is that the daemon reads it the same way.)
    let marker = c.read_file("/var/lib/sightline/notify/clean-stop").unwrap();
    assert_eq!(marker.trim().len(), 36, "{marker:?}");
    // Simulate a previous boot that ended without a clean stop.
    forget_the_clean_stop(&c);
    c.sh_ok("systemctl start sightline");
    wait_until("unclean restart sent", Duration::from_secs(30), || {
        !ntfy_titles(&c, "unclean restart").is_empty()
    });
    assert!(
        c.read_file("/var/lib/sightline/notify/clean-stop")
            .is_none(),
        "cleared on start"
    );
    // A plain daemon restart within the same boot sends nothing more.
    c.sh_ok("systemctl restart sightline");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ntfy_titles(&c, "unclean restart").len(), 1);
}

#[test]
fn a_rolled_back_k3s_change_sends_one_message() {
    let Some(c) = daemon_container() else { return };
    wait_until("first converge done", Duration::from_secs(60), || {
        c.read_file("/etc/rancher/k3s/audit-policy.yaml").is_some()
    });
    let good = c.read_file("/etc/rancher/k3s/audit-policy.yaml").unwrap();
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
    let cfg = c.read_file("/etc/sightline/config.toml").unwrap();
    c.write_file(
        "/etc/sightline/config.toml",
        format!("{cfg}[audit]\npolicy_source = \"/etc/sightline/custom-policy.yaml\"\n"),
        0o600,
    );
    c.sh_ok("systemctl kill --kill-who=main -s HUP sightline");
    wait_until("rollback sent", Duration::from_secs(90), || {
        !ntfy_titles(&c, "rolled back").is_empty()
    });
    let body = posts(&c)
        .into_iter()
        .find(|p| p["title"].as_str().unwrap_or("").contains("rolled back"))
        .unwrap();
    let text = body["body"].as_str().unwrap();
    assert!(text.contains("/var/lib/sightline/rejected/"), "{text}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(ntfy_titles(&c, "rolled back").len(), 1, "once");
}
