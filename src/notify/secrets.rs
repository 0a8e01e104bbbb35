//! Secrets for the channels: read from files (or systemd credentials),
//! never logged, and refused when others can read them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{LoadedConfig, Origin};
use crate::sysroot::Sysroot;

/// A secret value. Its Debug and Display print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret that cannot be used, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}\n  fix: {fix}")]
pub struct SecretError {
    /// What is wrong, naming the file (and line).
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

/// Where systemd puts credentials passed with `LoadCredential=`.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Reads the secret file configured under `key` at host path `host_path`.
///
/// Under systemd, `LoadCredential=NAME:PATH` puts the file into
/// `$CREDENTIALS_DIRECTORY/NAME`, readable by the service only; when a
/// credential named like the configured file exists, it wins (systemd.exec(5),
/// "Credentials"). Otherwise the file is read under the sysroot, and refused
/// when others may read it.
pub fn read_file(root: &Sysroot, key: &str, host_path: &str) -> Result<Secret, SecretError> {
    let name = Path::new(host_path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(dir) = std::env::var_os(CREDENTIALS_ENV) {
        let cred = PathBuf::from(dir).join(&name);
        if cred.is_file() {
            return read_checked(&cred, &cred.display().to_string(), key);
        }
    }
    read_checked(&root.path(host_path), host_path, key)
}

fn read_checked(real: &Path, shown: &str, key: &str) -> Result<Secret, SecretError> {
    let meta = std::fs::metadata(real).map_err(|e| SecretError {
        what: format!("{key}: cannot read {shown}: {e}"),
        fix: format!(
            "create {shown} holding only the secret (chmod 600), or pass it with LoadCredential="
        ),
    })?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(SecretError {
            what: format!("{key}: {shown} is readable by every user"),
            fix: format!("chmod 600 {shown}"),
        });
    }
    let text = std::fs::read_to_string(real).map_err(|e| SecretError {
        what: format!("{key}: cannot read {shown}: {e}"),
        fix: format!("make {shown} readable by root, holding UTF-8 text"),
    })?;
    let value = text.trim().to_string();
    if value.is_empty() {
        return Err(SecretError {
            what: format!("{key}: {shown} is empty"),
            fix: format!("put the secret into {shown}"),
        });
    }
    Ok(Secret(value))
}

/// Keys whose value is itself a secret when written inline.
pub const INLINE_SECRET_KEYS: [&str; 1] = ["alerting.discord_webhook_url"];

/// Refuses a configuration file that holds a secret inline and that others
/// may read, naming the file, the line and the fix.
pub fn check_inline(root: &Sysroot, cfg: &LoadedConfig) -> Result<(), SecretError> {
    for key in INLINE_SECRET_KEYS {
        let Origin::File { path, line, .. } = cfg.origin(key) else {
            continue;
        };
        let mode = std::fs::metadata(root.path(&path))
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o004 != 0 {
            let file = path.display();
            return Err(SecretError {
                what: format!(
                    "{file}:{line}: {key} holds a webhook URL with its token, and {file} is readable by every user (mode {:04o})",
                    mode & 0o7777
                ),
                fix: format!(
                    "chmod 600 {file}, or move the URL into a file of its own (chmod 600) named by {key}_file"
                ),
            });
        }
    }
    Ok(())
}
