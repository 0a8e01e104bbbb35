//! Credentials that end up in Kubernetes Secrets: generated once from the
//! OS RNG and kept under the state directory (mode 0600), or read from files
//! the configuration names. They never appear in values files or logs.

use anyhow::{Context, Result};
use base64::Engine;

use std::path::Path;

use crate::atomic::{TEMP_PREFIX, create_dir_all, fsync_dir, remove_file, write_atomic};
use crate::config::Config;
use crate::sysroot::Sysroot;

/// The credentials a render needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Grafana's admin password.
    pub grafana_admin_password: String,
    /// Uptime Kuma's admin password (its setup Job creates the user; AutoKuma logs in with it).
    pub uptime_kuma_admin_password: String,
    /// The SMTP password, when configured.
    pub smtp_password: Option<String>,
    /// The Discord webhook URL, inline or from its file, when configured.
    pub discord_webhook_url: Option<String>,
    /// The ntfy access token, when configured.
    pub ntfy_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// Host path of the stored Grafana admin password.
pub fn grafana_password_path(cfg: &Config) -> String {
    format!("{}/secrets/grafana-admin-password", cfg.paths.state_dir)
}

/// Host path of the stored Uptime Kuma admin password.
pub fn uptime_kuma_password_path(cfg: &Config) -> String {
    format!("{}/secrets/uptime-kuma-admin-password", cfg.paths.state_dir)
}

/// A stored password, generated on first use. With `persist` false a
/// missing one is generated for this run only, and the second value says so.
fn stored_password(root: &Sysroot, path: &str, persist: bool) -> Result<(String, bool)> {
    let stored = |root: &Sysroot| -> Result<Option<String>> {
        Ok(root
            .read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()))
    };
    Ok(match stored(root)? {
        Some(p) => (p, false),
        None if persist => {
            let real = root.path(path);
            let mine = generate_password()?;
            if store_first(&real, &format!("{mine}\n"))
                .with_context(|| format!("storing {path}"))?
            {
                (mine, false)
            } else {
                // Another sightline stored one first: everyone uses that.
                let theirs = stored(root)?.with_context(|| {
                    format!("{path} was created by another sightline but is empty")
                })?;
                (theirs, false)
            }
        }
        None => (generate_password()?, true),
    })
}

/// Loads the stored credentials, generating the Grafana and Uptime Kuma
/// passwords on first use. With `persist` false (a read-only render) a
/// missing password is generated for this run only, and the second value
/// says so.
pub fn load(root: &Sysroot, cfg: &Config, persist: bool) -> Result<(Secrets, bool)> {
    let (password, ephemeral) = stored_password(root, &grafana_password_path(cfg), persist)?;
    let (kuma, kuma_ephemeral) = stored_password(root, &uptime_kuma_password_path(cfg), persist)?;
    let a = &cfg.alerting;
    // The same reader as the daemon's own notifications: a systemd
    // credential named like the file wins, and a file others can read is
    // refused, naming it and the fix.
    let file = |key: &str, path: &Option<String>| -> Result<Option<String>> {
        path.as_deref()
            .map(|p| {
                crate::notify::secrets::read_file(root, key, p).map(|s| s.expose().to_string())
            })
            .transpose()
            .map_err(anyhow::Error::from)
    };
    let smtp_password = file(
        "alerting.smtp_auth_password_file",
        &a.smtp_auth_password_file,
    )?;
    let ntfy_token = file("alerting.ntfy_token_file", &a.ntfy_token_file)?;
    let discord_webhook_url = match &a.discord_webhook_url {
        Some(u) => Some(u.clone()),
        None => file(
            "alerting.discord_webhook_url_file",
            &a.discord_webhook_url_file,
        )?,
    };
    Ok((
        Secrets {
            grafana_admin_password: password,
            uptime_kuma_admin_password: kuma,
            smtp_password,
            discord_webhook_url,
            ntfy_token,
        },
        ephemeral || kuma_ephemeral,
    ))
}

/// The generated passwords a cluster shares: (key in the cluster Secret,
/// host path of the local copy).
pub fn generated_passwords(cfg: &Config) -> [(&'static str, String); 2] {
    [
        ("grafana-admin-password", grafana_password_path(cfg)),
        ("uptime-kuma-admin-password", uptime_kuma_password_path(cfg)),
    ]
}

/// Stores a password at `path` (0600) unless it holds it already; returns
/// whether it wrote.
pub fn store_password(root: &Sysroot, path: &str, password: &str) -> Result<bool> {
    let path = path.to_string();
    if root.read_to_string(&path)?.as_deref().map(str::trim) == Some(password) {
        return Ok(false);
    }
    let real = root.path(&path);
    create_dir_all(real.parent().expect("has a parent"), 0o700)?;
    write_atomic(&real, format!("{password}\n").as_bytes(), 0o600)
        .with_context(|| format!("storing {path}"))?;
    Ok(true)
}

/// Stores `content` at `real` unless a file is already there; returns true
/// when this call created it.
///
/// Parallel first runs (`render` and `apply` at once) each generated a
/// password and the last rename won, so six runs handed out six passwords.
/// Here the content is written whole to a private staging file (through the
/// atomic-write helper) and published with link(2), which never replaces an
/// existing name: the first writer wins, the others read its password. An
/// empty or torn file can never be seen under the final name.
fn store_first(real: &Path, content: &str) -> std::io::Result<bool> {
    let dir = real.parent().expect("has a parent");
    create_dir_all(dir, 0o700)?;
    let name = real.file_name().expect("has a file name").to_string_lossy();
    // TEMP_PREFIX: a staging file left by a kill is swept with the others.
    let staging = dir.join(format!("{TEMP_PREFIX}{name}.{}", std::process::id()));
    write_atomic(&staging, content.as_bytes(), 0o600)?;
    let won = match std::fs::hard_link(&staging, real) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            let _ = remove_file(&staging);
            return Err(e);
        }
    };
    remove_file(&staging)?;
    if won {
        fsync_dir(dir)?;
    }
    Ok(won)
}

/// 32 bytes from the OS RNG, base64url without padding (43 characters).
pub fn generate_password() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("reading the OS RNG: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_and_distinct() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            format!(
                "{:?}",
                Secrets {
                    grafana_admin_password: a.clone(),
                    uptime_kuma_admin_password: b.clone(),
                    smtp_password: None,
                    discord_webhook_url: None,
                    ntfy_token: None,
                }
            )
            .find(&a)
            .is_none()
        );
    }

    #[test]
    fn the_first_stored_password_wins() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secrets/pw");
        assert!(store_first(&f, "one\n").unwrap());
        assert!(!store_first(&f, "two\n").unwrap());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "one\n");
        let left: Vec<_> = std::fs::read_dir(d.path().join("secrets"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["pw"], "no staging file is left behind");
    }
}
