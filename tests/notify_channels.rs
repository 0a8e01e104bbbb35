//! `sightline notify --test` through real protocols on loopback: ntfy and
//! Discord against a recording HTTP server, email against aiosmtpd.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::httprec::HttpRecorder;
use common::smtp::Smtp;

const NTFY: &str = "/homelab-alerts";
const DISCORD: &str = "/api/webhooks/1/tok3n";

fn secret(root: &Path, host: &str, content: &str) {
    common::write(root, host, content);
    let p = root.join(host.trim_start_matches('/'));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn setup(http: &HttpRecorder, smtp: &Smtp, email_to: &str, extra: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    common::write(r, "/proc/sys/kernel/hostname", "pi4-test\n");
    secret(r, "/etc/sightline/ntfy-token", "tk_test\n");
    secret(
        r,
        "/etc/sightline/discord-url",
        &format!("{}{DISCORD}\n", http.url),
    );
    secret(r, "/etc/sightline/smtp-password", "s3cret\n");
    common::write(
        r,
        "/etc/sightline/config.toml",
        &format!(
            "[alerting]\nntfy_url = \"{}{NTFY}\"\nntfy_token_file = \"/etc/sightline/ntfy-token\"\ndiscord_webhook_url_file = \"/etc/sightline/discord-url\"\nemail_to = \"{email_to}\"\nsmtp_smarthost = \"127.0.0.1:{}\"\nsmtp_from = \"k3s@example.org\"\nsmtp_auth_username = \"k3s\"\nsmtp_auth_password_file = \"/etc/sightline/smtp-password\"\nsmtp_require_tls = false\n{extra}",
            http.url, smtp.port
        ),
    );
    d
}

fn notify(root: &Path, envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("--root")
        .arg(root)
        .args(["notify", "--test", "--json"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

fn results(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn channel<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn all_three_channels_deliver() {
    let Some(smtp) = Smtp::start() else { return };
    let http = HttpRecorder::start();
    let d = setup(&http, &smtp, "me@example.org", "");
    let out = notify(d.path(), &[]);
    let v = results(&out);
    assert!(out.status.success(), "{v}");
    for ch in ["ntfy", "discord", "email"] {
        assert_eq!(channel(&v, ch)["ok"], true, "{v}");
        assert_eq!(channel(&v, ch)["attempts"], 1, "{v}");
    }

    let ntfy = http.requests(NTFY);
    assert_eq!(ntfy.len(), 1);
    let n = &ntfy[0];
    assert_eq!(n.method, "POST");
    assert_eq!(n.headers["authorization"], "Bearer tk_test");
    assert_eq!(n.headers["title"], "pi4-test: test notification");
    assert_eq!(n.headers["priority"], "default");
    assert!(n.headers["tags"].contains("sightline"));
    assert!(n.headers["content-type"].starts_with("text/plain"));
    assert!(n.body.contains("Node: pi4-test"), "{}", n.body);
    assert!(n.body.contains("See more: sightline status"), "{}", n.body);

    let discord = http.requests(DISCORD);
    assert_eq!(discord.len(), 1);
    let j: serde_json::Value = serde_json::from_str(&discord[0].body).unwrap();
    let content = j["content"].as_str().unwrap();
    assert!(
        content.starts_with("**pi4-test: test notification**"),
        "{content}"
    );
    assert!(content.chars().count() <= 2000);
    assert_eq!(j["allowed_mentions"]["parse"], serde_json::json!([]));

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], serde_json::json!(["me@example.org"]));
    assert_eq!(
        mails[0]["login"], "k3s",
        "authenticated with the password file"
    );
    let data = mails[0]["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: pi4-test: test notification"),
        "{data}"
    );
    assert!(data.contains("See more: sightline status"), "{data}");

    // The token and the webhook URL never reach the output.
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("tk_test") && !all.contains("tok3n"), "{all}");
}

#[test]
fn a_broken_channel_is_retried_counted_and_blocks_no_other() {
    let Some(smtp) = Smtp::start() else { return };
    let http = HttpRecorder::start();
    http.answer(DISCORD, &[500]);
    let d = setup(&http, &smtp, "me@example.org", "");
    let out = notify(d.path(), &[]);
    let v = results(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(channel(&v, "ntfy")["ok"], true);
    assert_eq!(channel(&v, "email")["ok"], true);
    let dc = channel(&v, "discord");
    assert_eq!(dc["ok"], false);
    assert_eq!(dc["attempts"], 3);
    assert!(dc["error"].as_str().unwrap().contains("HTTP 500"), "{dc}");

    let tries = http.requests(DISCORD);
    assert_eq!(tries.len(), 3, "retried");
    let ntfy = http.requests(NTFY);
    assert_eq!(ntfy.len(), 1);
    // ntfy went out before Discord's first retry: nobody waited for Discord.
    assert!(ntfy[0].at < tries[1].at);
    assert!(
        tries[2].at - tries[0].at
            >= std::time::Duration::from_secs(3) - std::time::Duration::from_millis(100),
        "backoff 1 s then 2 s"
    );
    assert_eq!(smtp.mails().len(), 1);

    // Counted for `status` and the metric.
    let counts: serde_json::Value = serde_json::from_str(&common::read(
        d.path(),
        "/var/lib/sightline/notify/deliveries.json",
    ))
    .unwrap();
    assert_eq!(counts["counts"]["discord"]["failed"], 3, "{counts}");
    assert_eq!(counts["counts"]["ntfy"]["sent"], 1, "{counts}");
    assert_eq!(counts["last"]["discord"]["result"], "failed");

    // Text output: one line per channel with the result or the error.
    let text = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("--root")
        .arg(d.path())
        .args(["notify", "--test"])
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ntfy     sent (1 attempt)")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("discord  FAILED after 3 attempts: HTTP 500")),
        "{stdout}"
    );
}

#[test]
fn smtp_refusal_is_reported() {
    let Some(smtp) = Smtp::start() else { return };
    let http = HttpRecorder::start();
    let d = setup(&http, &smtp, "refuse@example.org", "");
    let out = notify(d.path(), &[]);
    let v = results(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    let e = channel(&v, "email");
    assert_eq!(e["ok"], false);
    assert_eq!(e["attempts"], 3);
    assert!(e["error"].as_str().unwrap().contains("550"), "{e}");
    assert_eq!(channel(&v, "ntfy")["ok"], true);
    assert!(smtp.mails().is_empty());
}

#[test]
fn require_tls_refuses_a_relay_without_starttls() {
    let Some(smtp) = Smtp::start() else { return };
    let http = HttpRecorder::start();
    let d = setup(&http, &smtp, "me@example.org", "");
    let cfg = common::read(d.path(), "/etc/sightline/config.toml")
        .replace("smtp_require_tls = false", "smtp_require_tls = true");
    common::write(d.path(), "/etc/sightline/config.toml", &cfg);
    let v = results(&notify(d.path(), &[]));
    let e = channel(&v, "email");
    assert_eq!(e["ok"], false, "{v}");
    assert!(smtp.mails().is_empty(), "nothing sent in clear text");
}

#[test]
fn systemd_credentials_win_over_the_configured_file() {
    let Some(smtp) = Smtp::start() else { return };
    let http = HttpRecorder::start();
    let d = setup(&http, &smtp, "me@example.org", "");
    let creds = tempfile::tempdir().unwrap();
    secret(creds.path(), "/ntfy-token", "tk_from_credential\n");
    let out = notify(
        d.path(),
        &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", results(&out));
    assert_eq!(
        http.requests(NTFY)[0].headers["authorization"],
        "Bearer tk_from_credential"
    );
}
