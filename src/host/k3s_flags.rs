//! Finds k3s settings that would silently defeat the audit drop-in.
//!
//! k3s merges config.yaml, then config.yaml.d/*.yaml in lexical order. A
//! plain `kube-apiserver-arg:` in a file after ours replaces our list; a
//! `--kube-apiserver-arg` on the unit's command line replaces the config
//! files' list entirely.

use crate::config::Config;
use crate::facts::Facts;
use crate::sysroot::Sysroot;

const PLAIN_KEY: &str = "kube-apiserver-arg";

/// Warnings about k3s settings that conflict with sightline's drop-in.
pub fn conflicts(root: &Sysroot, cfg: &Config, facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if !facts.k3s.cli_apiserver_args.is_empty() {
        out.push(format!(
            "{} passes --kube-apiserver-arg on its command line ({}); k3s then ignores kube-apiserver-arg from the config files, including the audit flags. Move those flags into /etc/rancher/k3s/config.yaml",
            facts.k3s.unit_file.as_deref().unwrap_or("the k3s unit"),
            facts.k3s.cli_apiserver_args.join(", ")
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
    let config_yaml = std::path::Path::new(&dir)
        .parent()
        .map(|p| p.join("config.yaml"));
    if let Some(cy) = config_yaml {
        let cy = cy.to_string_lossy().into_owned();
        if let Some(flags) = plain_flags(root, &cy) {
            let audit_dupes: Vec<_> = flags
                .iter()
                .filter(|f| f.starts_with("audit-"))
                .cloned()
                .collect();
            if audit_dupes.is_empty() {
                out.push(format!(
                    "{cy} sets plain {PLAIN_KEY}; sightline's drop-in appends to it, but a --kube-apiserver-arg on the k3s command line would replace both"
                ));
            } else {
                out.push(format!(
                    "{cy} already sets audit flags ({}); the apiserver gets them twice and the later value wins. Remove them from config.yaml and configure [audit] in sightline",
                    audit_dupes.join(", ")
                ));
            }
        }
    }
    let mut later: Vec<String> = std::fs::read_dir(root.path(&dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml") && n.as_str() > our_name.as_str())
                .collect()
        })
        .unwrap_or_default();
    later.sort();
    for name in later {
        let path = format!("{dir}/{name}");
        if plain_flags(root, &path).is_some() {
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
