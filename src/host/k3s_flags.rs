//! Finds k3s settings that would silently defeat the audit drop-in.
//!
//! k3s reads its config file, then `<config>.d/*.yaml|*.yml` (any case) in
//! name order; a plain `kube-apiserver-arg:` in a later file replaces every
//! earlier value, ours included. `--kube-apiserver-arg` values on the
//! command line are appended after the config files' values (k3s
//! `pkg/configfilearg/parser.go` `Parse`: "the non-config file flags will
//! override, or if a slice append to, the config file values"), so they
//! only matter when they set an audit flag again: the later value wins.

use crate::config::Config;
use crate::facts::{Facts, K3sRole, k3s_dropins};
use crate::sysroot::Sysroot;

const PLAIN_KEY: &str = "kube-apiserver-arg";

/// True for an apiserver argument that sets one of the audit flags.
fn is_audit_arg(arg: &str) -> bool {
    arg.trim_start_matches('-').starts_with("audit-")
}

/// Warnings about k3s settings that conflict with sightline's drop-in.
pub fn conflicts(root: &Sysroot, cfg: &Config, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if facts.k3s.role == K3sRole::Server {
        out.extend(facts.k3s.problems.iter().cloned());
    }
    let cli_audit: Vec<&str> = facts
        .k3s
        .cli_apiserver_args
        .iter()
        .map(String::as_str)
        .filter(|a| is_audit_arg(a))
        .collect();
    if !cli_audit.is_empty() {
        out.push(format!(
            "{} passes audit flags with --kube-apiserver-arg on its command line ({}); k3s appends them after the config files' values, so they override sightline's. Remove them from ExecStart and configure [audit] in sightline",
            facts.k3s.unit_file.as_deref().unwrap_or("the k3s unit"),
            cli_audit.join(", ")
        ));
    }
    let ours = std::path::Path::new(&cfg.paths.k3s_audit_dropin);
    let dir = ours
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let our_name = ours
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if facts.k3s.role == K3sRole::Server && facts.k3s.config.is_remote() {
        out.push(format!(
            "k3s reads its config from {} ({}) and then no local drop-in directory, so it never reads {}. Point K3S_CONFIG_FILE or --config at a local file",
            facts.k3s.config.file, facts.k3s.config.source, cfg.paths.k3s_audit_dropin
        ));
    } else if facts.k3s.role == K3sRole::Server && dir != facts.k3s.config.dropin_dir {
        out.push(format!(
            "k3s reads drop-ins from {} (its config file is {}: {}), not from {dir}, so it never reads {}. Remove paths.k3s_audit_dropin from the sightline config to follow k3s, or set it inside {}",
            facts.k3s.config.dropin_dir,
            facts.k3s.config.file,
            facts.k3s.config.source,
            cfg.paths.k3s_audit_dropin,
            facts.k3s.config.dropin_dir
        ));
    }
    // The main file of this drop-in directory: k3s's `<config>.d`.
    if let Some(config_file) = dir.strip_suffix(".d")
        && let Some(flags) = plain_flags(root, config_file)
    {
        let audit_dupes: Vec<_> = flags.iter().filter(|f| is_audit_arg(f)).cloned().collect();
        if !audit_dupes.is_empty() {
            out.push(format!(
                "{config_file} already sets audit flags ({}); the apiserver gets them twice and the later value wins. Remove them from {config_file} and configure [audit] in sightline",
                audit_dupes.join(", ")
            ));
        }
    }
    for path in k3s_dropins(root, &dir) {
        let name = path.rsplit('/').next().unwrap_or_default();
        if name > our_name.as_str() && plain_flags(root, &path).is_some() {
            out.push(format!(
                "{path} sets plain {PLAIN_KEY:?} and sorts after {our_name}: it replaces the audit flags. Change it to \"{PLAIN_KEY}+\""
            ));
        }
    }
    out
}

/// The plain key's values in a k3s config file, if it sets the plain key.
fn plain_flags(root: &Sysroot, path: &str) -> Option<Vec<String>> {
    let text = root.read_to_string(path).ok().flatten()?;
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    let val = v.as_mapping()?.get(PLAIN_KEY)?;
    Some(match val {
        serde_yaml_ng::Value::Sequence(s) => s
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        serde_yaml_ng::Value::String(s) => vec![s.clone()],
        _ => vec![],
    })
}
