//! The CNI in use, from the CNI config directories k3s and Cilium write.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// Directories holding CNI network configs.
pub const CNI_DIRS: [&str; 2] = ["/etc/cni/net.d", "/var/lib/rancher/k3s/agent/etc/cni/net.d"];

/// The CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cni {
    /// Cilium (enables the Tetragon path).
    Cilium,
    /// k3s's built-in flannel.
    Flannel,
    /// Another plugin, by config file name.
    Other(String),
    /// No CNI config found.
    None,
}

impl Cni {
    /// `cilium`, `flannel`, `none`, or the config file name of another plugin.
    pub fn name(&self) -> String {
        match self {
            Cni::Cilium => "cilium".into(),
            Cni::Flannel => "flannel".into(),
            Cni::Other(f) => f.clone(),
            Cni::None => "none".into(),
        }
    }
}

pub(super) fn detect(root: &Sysroot) -> Cni {
    let mut names: Vec<String> = Vec::new();
    for dir in CNI_DIRS {
        if let Ok(rd) = std::fs::read_dir(root.resolve(dir)) {
            names.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    names.retain(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"));
    names.sort();
    if names.iter().any(|n| n.contains("cilium")) {
        Cni::Cilium
    } else if names.iter().any(|n| n.contains("flannel")) {
        Cni::Flannel
    } else if let Some(first) = names.first() {
        Cni::Other(first.clone())
    } else {
        Cni::None
    }
}
