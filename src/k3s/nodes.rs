//! The cluster's nodes as the API reports them (`GET /api/v1/nodes`):
//! what the cluster decision needs from each one.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, K3sApi};

/// The annotation a k3s server's sightline puts on its own Node: whether
/// its kernel has BTF (`/sys/kernel/btf/vmlinux`). Agent nodes have no API
/// credentials, so theirs stays unknown.
pub const BTF_ANNOTATION: &str = "sightline.dev/kernel-btf";

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `status.nodeInfo.architecture` (Go's GOARCH: `amd64`, `arm64`, `arm`).
    pub arch: String,
    /// `status.allocatable.memory`, in bytes.
    pub allocatable_memory: u64,
    /// `status.nodeInfo.osImage`.
    pub os_image: String,
    /// `status.nodeInfo.kernelVersion`.
    pub kernel: String,
    /// Carries the `node-role.kubernetes.io/control-plane` label (a k3s server).
    pub server: bool,
    /// Kernel BTF, when the node's sightline said (see [`BTF_ANNOTATION`]).
    pub btf: Option<bool>,
    /// Allocatable `nvidia.com/gpu` (the NVIDIA device plugin's resource).
    pub gpus: u64,
}

/// A resource quantity in bytes (`3902932Ki`, `16Gi`, `4G`, `1048576`);
/// k8s.io/apimachinery `pkg/api/resource/quantity.go` suffixes.
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn node(v: &Value) -> Option<NodeInfo> {
    let info = &v["status"]["nodeInfo"];
    let labels = &v["metadata"]["labels"];
    Some(NodeInfo {
        name: v["metadata"]["name"].as_str()?.to_string(),
        arch: info["architecture"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        allocatable_memory: parse_quantity(v["status"]["allocatable"]["memory"].as_str()?)?,
        os_image: info["osImage"].as_str().unwrap_or_default().to_string(),
        kernel: info["kernelVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        server: labels
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        btf: match v["metadata"]["annotations"][BTF_ANNOTATION].as_str() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
        gpus: v["status"]["allocatable"]["nvidia.com/gpu"]
            .as_str()
            .and_then(|q| q.parse().ok())
            .unwrap_or(0),
    })
}

/// Every node, by name. A node that reports no allocatable memory yet (it
/// is still registering) is left out, with a warning.
pub async fn list(api: &K3sApi) -> Result<Vec<NodeInfo>, ApiError> {
    let v: Value = api.get_json("/api/v1/nodes").await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for i in &items {
        match node(i) {
            Some(n) => out.push(n),
            None => tracing::warn!(
                node = %i["metadata"]["name"],
                "node reports no status.allocatable.memory yet; left out of the cluster decision"
            ),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Records this node's kernel BTF on its Node object (a merge patch), so
/// the Lease holder can choose Falco's driver for every kernel.
pub async fn annotate_btf(api: &K3sApi, node: &str, btf: bool) -> Result<(), ApiError> {
    let body = json!({"metadata": {"annotations": {BTF_ANNOTATION: btf.to_string()}}});
    api.send_json::<Value>(
        reqwest::Method::PATCH,
        &format!("/api/v1/nodes/{node}"),
        &body,
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("3902932Ki"), Some(3902932 * 1024));
        assert_eq!(parse_quantity("16Gi"), Some(16 << 30));
        assert_eq!(parse_quantity("4G"), Some(4_000_000_000));
        assert_eq!(parse_quantity("12x"), None);
    }
}
