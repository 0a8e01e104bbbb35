//! The k3s API audit policy and the apiserver flags that enable it.

use super::{Component, DesiredDir, DesiredFile, DesiredState, managed_header};
use crate::config::Config;
use crate::effects::Effect;
use crate::facts::{Facts, K3sRole};
use crate::sysroot::Sysroot;

/// The policy shipped with sightline.
pub const BUILTIN_POLICY: &str = include_str!("../../files/audit-policy.yaml");

/// The k3s config key sightline appends to. Never the plain key: a plain key
/// in a later file replaces every earlier value.
pub const APPEND_KEY: &str = "kube-apiserver-arg+";

pub(super) fn contribute(
    root: &Sysroot,
    cfg: &Config,
    facts: &Facts,
    d: &mut DesiredState,
) -> Result<(), String> {
    if !cfg.audit.enabled {
        d.skipped
            .push((Component::Audit, "disabled by audit.enabled = false".into()));
        return Ok(());
    }
    if facts.k3s.role != K3sRole::Server {
        let why = match facts.k3s.role {
            K3sRole::Agent => {
                "k3s agent node: the API server (and its audit log) runs on the servers"
            }
            _ => "no k3s server on this machine",
        };
        d.skipped.push((Component::Audit, why.into()));
        return Ok(());
    }
    // The built-in policy is checked by the apiserver's rules in a unit
    // test; only a user's policy is checked on every run.
    let policy = match &cfg.audit.policy_source {
        Some(src) => {
            let text = root
                .read_to_string(src)
                .map_err(|e| format!("audit.policy_source {src}: {e}"))?
                .ok_or_else(|| format!("audit.policy_source {src} does not exist"))?;
            super::audit_policy::validate_policy(&text)
                .map_err(|e| format!("{src}: {e}; nothing was written"))?;
            text
        }
        None => BUILTIN_POLICY.to_string(),
    };
    let dropin = render_dropin(cfg);
    validate_dropin(&dropin)
        .map_err(|e| format!("generated k3s drop-in is invalid ({e}); nothing was written"))?;

    let restart = Effect::RestartK3s {
        unit: cfg.k3s.unit.clone(),
    };
    // The apiserver exits with "ensureLogFile" when the directory is missing,
    // so it is created before anything that points k3s at it.
    d.dirs.push(DesiredDir {
        path: cfg.audit_log_dir(),
        mode: 0o700,
        component: Component::Audit,
    });
    d.files.push(DesiredFile {
        path: cfg.paths.audit_policy.clone(),
        content: policy.into_bytes(),
        mode: 0o600,
        component: Component::Audit,
        effects: vec![restart.clone()],
    });
    // The drop-in references the policy, so it is written after it.
    d.files.push(DesiredFile {
        path: cfg.paths.k3s_audit_dropin.clone(),
        content: dropin.into_bytes(),
        mode: 0o600,
        component: Component::Audit,
        effects: vec![restart],
    });
    d.warnings
        .extend(super::k3s_flags::conflicts(root, cfg, facts));
    if facts.k3s.unit_file.is_none() {
        d.warnings.push(format!(
            "no {} unit file found; sightline cannot restart k3s to load the audit settings",
            cfg.k3s.unit
        ));
    }
    Ok(())
}

/// The apiserver audit flags, in the order the issue of record lists them.
pub fn audit_flags(cfg: &Config) -> Vec<String> {
    vec![
        format!("audit-log-path={}", cfg.audit.log_path),
        format!("audit-policy-file={}", cfg.paths.audit_policy),
        format!("audit-log-maxage={}", cfg.audit.max_age_days),
        format!("audit-log-maxbackup={}", cfg.audit.max_backups),
        format!("audit-log-maxsize={}", cfg.audit.max_size_mb),
    ]
}

/// The config.yaml.d drop-in.
pub fn render_dropin(cfg: &Config) -> String {
    let mut s = managed_header("#");
    s.push_str("# \"+\" appends to kube-apiserver-arg from config.yaml and earlier drop-ins\n");
    s.push_str("# instead of replacing them.\n");
    s.push_str(APPEND_KEY);
    s.push_str(":\n");
    for f in audit_flags(cfg) {
        s.push_str("  - ");
        s.push_str(&serde_json::to_string(&f).expect("string serializes"));
        s.push('\n');
    }
    s
}

/// Checks a drop-in parses as YAML with exactly the append key holding `key=value` strings.
pub fn validate_dropin(text: &str) -> Result<(), String> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let map = v.as_mapping().ok_or("not a YAML mapping")?;
    if map.len() != 1 {
        return Err(format!(
            "expected only {APPEND_KEY}, found {} keys",
            map.len()
        ));
    }
    let list = map
        .get(APPEND_KEY)
        .and_then(|v| v.as_sequence())
        .ok_or_else(|| format!("{APPEND_KEY} must be a list"))?;
    for item in list {
        let s = item.as_str().ok_or("every flag must be a string")?;
        if !s.contains('=') || s.starts_with('-') {
            return Err(format!("flag {s:?} must be name=value without dashes"));
        }
    }
    Ok(())
}
