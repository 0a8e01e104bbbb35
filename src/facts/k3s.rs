//! The k3s role of this node, from its systemd unit files and data directory.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// Directories searched for k3s unit files, highest priority first.
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// What k3s does on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum K3sRole {
    /// Runs the control plane (and usually workloads).
    Server,
    /// Runs workloads only.
    Agent,
    /// No k3s here.
    None,
}

/// k3s installation facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3s {
    /// Server, agent or none.
    pub role: K3sRole,
    /// Host path of the unit file found, if any.
    pub unit_file: Option<String>,
    /// Arguments passed to the apiserver on the unit's command line. The
    /// config file's list is ignored when these exist.
    pub cli_apiserver_args: Vec<String>,
}

pub(super) fn detect(root: &Sysroot) -> K3s {
    let server_unit = find_unit(root, "k3s.service");
    let agent_unit = find_unit(root, "k3s-agent.service");
    let role = if server_unit.is_some() || root.path("/var/lib/rancher/k3s/server").is_dir() {
        K3sRole::Server
    } else if agent_unit.is_some() {
        K3sRole::Agent
    } else {
        K3sRole::None
    };
    let unit_file = match role {
        K3sRole::Server => server_unit,
        K3sRole::Agent => agent_unit,
        K3sRole::None => None,
    };
    let cli_apiserver_args = unit_file
        .as_deref()
        .map(|u| {
            let mut texts = vec![root.read_to_string(u).ok().flatten().unwrap_or_default()];
            texts.extend(dropins(root, u));
            apiserver_args(&exec_start(&texts))
        })
        .unwrap_or_default();
    K3s {
        role,
        unit_file,
        cli_apiserver_args,
    }
}

fn find_unit(root: &Sysroot, name: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| root.path(p).is_file())
}

fn dropins(root: &Sysroot, unit_file: &str) -> Vec<String> {
    let name = unit_file.rsplit('/').next().unwrap_or_default();
    let mut files: Vec<(String, String)> = Vec::new();
    for dir in UNIT_DIRS {
        let d = format!("{dir}/{name}.d");
        if let Ok(rd) = std::fs::read_dir(root.path(&d)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".conf") && !files.iter().any(|(f, _)| *f == n) {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    files.push((n, text));
                }
            }
        }
    }
    files.sort();
    files.into_iter().map(|(_, t)| t).collect()
}

/// The effective ExecStart command line of a unit and its drop-ins, in
/// order: an empty `ExecStart=` resets, later lines win.
pub fn exec_start(texts: &[String]) -> String {
    let mut current = String::new();
    for text in texts {
        let joined = text.replace("\\\n", " ");
        for line in joined.lines() {
            if let Some(v) = line.trim().strip_prefix("ExecStart=") {
                current = v.trim().to_string();
            }
        }
    }
    current
}

/// The values of `--kube-apiserver-arg` flags in a command line.
pub fn apiserver_args(cmdline: &str) -> Vec<String> {
    let words: Vec<String> = cmdline
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if let Some(v) = w.strip_prefix("--kube-apiserver-arg=") {
            out.push(v.to_string());
        } else if w == "--kube-apiserver-arg" {
            if let Some(v) = words.get(i + 1) {
                out.push(v.clone());
                i += 1;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cli_apiserver_args_across_dropins() {
        let unit = "[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=enable-admission-plugins=NodeRestriction' \\\n\t'--kube-apiserver-arg' 'anonymous-auth=false'\n".to_string();
        let cmd = exec_start(std::slice::from_ref(&unit));
        assert_eq!(
            apiserver_args(&cmd),
            vec![
                "enable-admission-plugins=NodeRestriction",
                "anonymous-auth=false"
            ]
        );
        let reset = "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server\n".to_string();
        assert!(apiserver_args(&exec_start(&[unit, reset])).is_empty());
    }
}
