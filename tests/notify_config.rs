//! Secrets in configuration: a webhook URL in a file others can read is
//! refused, naming the file, the line and the fix.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn chmod(root: &Path, host: &str, mode: u32) {
    std::fs::set_permissions(
        root.join(host.trim_start_matches('/')),
        std::fs::Permissions::from_mode(mode),
    )
    .unwrap();
}

#[test]
fn webhook_url_in_a_world_readable_config_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    common::write(
        r,
        "/etc/sightline/config.toml",
        "[alerting]\ndiscord_webhook_url = \"http://127.0.0.1:9/api/webhooks/1/secret\"\n",
    );
    chmod(r, "/etc/sightline/config.toml", 0o644);
    let out = common::sightline(r, &["notify", "--test"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/etc/sightline/config.toml:2: alerting.discord_webhook_url"),
        "{err}"
    );
    assert!(
        err.contains("chmod 600 /etc/sightline/config.toml"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the URL is never printed: {err}");

    // Once only root can read it, the check passes (and the send fails,
    // since nothing listens on port 9).
    chmod(r, "/etc/sightline/config.toml", 0o600);
    let out = common::sightline(r, &["notify", "--test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("discord  FAILED after 3 attempts"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");
}

#[test]
fn a_world_readable_secret_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    common::write(
        r,
        "/etc/sightline/config.toml",
        "[alerting]\nntfy_url = \"http://127.0.0.1:9/t\"\nntfy_token_file = \"/etc/sightline/ntfy-token\"\n",
    );
    common::write(r, "/etc/sightline/ntfy-token", "tk_x\n");
    chmod(r, "/etc/sightline/ntfy-token", 0o644);
    let out = common::sightline(r, &["notify", "--test"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/etc/sightline/ntfy-token is readable by every user"),
        "{err}"
    );
    assert!(err.contains("chmod 600 /etc/sightline/ntfy-token"), "{err}");
}

#[test]
fn notify_section_defaults_and_bounds() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    common::write(
        r,
        "/etc/sightline/config.toml",
        "[notify]\nrepeat_hours = 0\n",
    );
    let out = common::sightline(r, &["config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/etc/sightline/config.toml:2:1: notify.repeat_hours"),
        "{err}"
    );
}
