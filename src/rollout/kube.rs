//! The reads the rollout makes, over [`K3sApi`]. Nothing here writes to the
//! API: sightline changes the cluster only through k3s's manifests directory.

use serde_json::Value;

use crate::k3s::{ApiError, K3sApi};

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// GET that maps 404 to `None`.
pub async fn get_opt(api: &K3sApi, path: &str) -> Result<Option<Value>, ApiError> {
    match api.get_json::<Value>(path).await {
        Ok(v) => Ok(Some(v)),
        Err(ApiError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A list's items.
async fn list(api: &K3sApi, path: &str) -> Result<Vec<Value>, ApiError> {
    Ok(get_opt(api, path)
        .await?
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default())
}

/// The Addon k3s keeps for a stage file.
pub async fn addon(api: &K3sApi, name: &str) -> Result<Option<Value>, ApiError> {
    get_opt(
        api,
        &format!(
            "/apis/k3s.cattle.io/v1/namespaces/kube-system/addons/{}",
            enc(name)
        ),
    )
    .await
}

/// Events about an Addon.
pub async fn addon_events(api: &K3sApi, name: &str) -> Result<Vec<Value>, ApiError> {
    let sel = enc(&format!(
        "involvedObject.kind=Addon,involvedObject.name={name}"
    ));
    list(
        api,
        &format!("/api/v1/namespaces/kube-system/events?fieldSelector={sel}"),
    )
    .await
}

/// A HelmChart in kube-system.
pub async fn helmchart(api: &K3sApi, name: &str) -> Result<Option<Value>, ApiError> {
    get_opt(
        api,
        &format!(
            "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/{}",
            enc(name)
        ),
    )
    .await
}

/// A HelmChart's install job: `status.jobName`, else `helm-install-NAME`.
pub async fn install_job(
    api: &K3sApi,
    helmchart: Option<&Value>,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let job = helmchart
        .and_then(|h| h["status"]["jobName"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("helm-install-{name}"));
    get_opt(
        api,
        &format!("/apis/batch/v1/namespaces/kube-system/jobs/{}", enc(&job)),
    )
    .await
}

/// Pods selected by an object's `spec.selector.matchLabels` in a namespace.
pub async fn pods_of(api: &K3sApi, namespace: &str, obj: &Value) -> Result<Vec<Value>, ApiError> {
    let Some(labels) = obj["spec"]["selector"]["matchLabels"].as_object() else {
        return Ok(Vec::new());
    };
    let sel: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if sel.is_empty() {
        return Ok(Vec::new());
    }
    list(
        api,
        &format!(
            "/api/v1/namespaces/{}/pods?labelSelector={}",
            enc(namespace),
            enc(&sel.join(","))
        ),
    )
    .await
}

/// A Deployment, DaemonSet or StatefulSet.
pub async fn workload(
    api: &K3sApi,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    get_opt(
        api,
        &format!(
            "/apis/apps/v1/namespaces/{}/{kind}s/{}",
            enc(namespace),
            enc(name)
        ),
    )
    .await
}

/// The REST path of an object, from its apiVersion, kind, namespace and name.
pub fn object_path(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let lower = kind.to_ascii_lowercase();
    let plural = if lower.ends_with("policy") {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    match namespace {
        Some(ns) => format!("{base}/namespaces/{}/{plural}/{}", enc(ns), enc(name)),
        None => format!("{base}/{plural}/{}", enc(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            object_path("v1", "Secret", Some("monitoring"), "x"),
            "/api/v1/namespaces/monitoring/secrets/x"
        );
        assert_eq!(
            object_path(
                "networking.k8s.io/v1",
                "NetworkPolicy",
                Some("logging"),
                "a"
            ),
            "/apis/networking.k8s.io/v1/namespaces/logging/networkpolicies/a"
        );
        assert_eq!(
            object_path("cilium.io/v1alpha1", "TracingPolicy", None, "t"),
            "/apis/cilium.io/v1alpha1/tracingpolicies/t"
        );
        assert_eq!(
            object_path("v1", "Namespace", None, "falco"),
            "/api/v1/namespaces/falco"
        );
        assert_eq!(enc("a=b,c/d"), "a%3Db%2Cc%2Fd");
    }
}
