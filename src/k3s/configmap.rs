//! The ConfigMap `kube-system/sightline-cluster` (the cluster decision) and
//! the Secret `kube-system/sightline-cluster-secrets` (credentials generated
//! once for the cluster): read, created, and updated with the
//! `resourceVersion` that was read, so a stale writer gets 409 rather than
//! overwriting a newer decision (k8s.io/apiserver
//! `pkg/registry/generic/registry/store.go`, `Update`).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

use super::{ApiError, K3sApi};

/// The ConfigMap holding the cluster decision.
pub const CLUSTER_CONFIGMAP: &str = "sightline-cluster";
/// The Secret holding the generated credentials.
pub const CLUSTER_SECRET: &str = "sightline-cluster-secrets";

/// Which kind of string map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `v1/ConfigMap`: `data` holds plain strings.
    ConfigMap,
    /// `v1/Secret`: `data` holds base64.
    Secret,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// A ConfigMap or Secret in kube-system as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMap {
    /// The version an update must carry.
    pub resource_version: String,
    /// Its data, decoded.
    pub data: BTreeMap<String, String>,
}

fn collection(kind: Kind) -> String {
    format!("/api/v1/namespaces/kube-system/{}", kind.plural())
}

fn decode(kind: Kind, url: &str, v: &Value) -> Result<DataMap, ApiError> {
    let bad = |detail: String| ApiError::Decode {
        url: url.to_string(),
        detail,
    };
    let resource_version = v["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| bad("no metadata.resourceVersion".into()))?
        .to_string();
    let mut data = BTreeMap::new();
    if let Some(m) = v["data"].as_object() {
        for (k, val) in m {
            let s = val.as_str().unwrap_or_default();
            let s = match kind {
                Kind::ConfigMap => s.to_string(),
                Kind::Secret => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| bad(format!("data.{k}: {e}")))?;
                    String::from_utf8(raw).map_err(|e| bad(format!("data.{k}: {e}")))?
                }
            };
            data.insert(k.clone(), s);
        }
    }
    Ok(DataMap {
        resource_version,
        data,
    })
}

/// Reads a ConfigMap or Secret in kube-system.
pub async fn get(api: &K3sApi, kind: Kind, name: &str) -> Result<Option<DataMap>, ApiError> {
    let path = format!("{}/{name}", collection(kind));
    match api.get_opt::<Value>(&path).await? {
        Some(v) => decode(kind, &path, &v).map(Some),
        None => Ok(None),
    }
}

/// Creates the object (`prev` None) or updates the one read as `prev`.
/// 409 when someone else created or changed it since.
pub async fn put(
    api: &K3sApi,
    kind: Kind,
    name: &str,
    data: &BTreeMap<String, String>,
    prev: Option<&DataMap>,
) -> Result<DataMap, ApiError> {
    let encoded: BTreeMap<&String, String> = data
        .iter()
        .map(|(k, v)| {
            let v = match kind {
                Kind::ConfigMap => v.clone(),
                Kind::Secret => base64::engine::general_purpose::STANDARD.encode(v),
            };
            (k, v)
        })
        .collect();
    let mut body = json!({
        "apiVersion": "v1",
        "kind": kind.kind(),
        "metadata": {"name": name, "namespace": "kube-system",
            "labels": {"app.kubernetes.io/managed-by": "sightline"}},
        "data": encoded,
    });
    if kind == Kind::Secret {
        body["type"] = json!("Opaque");
    }
    let (method, path) = match prev {
        None => (reqwest::Method::POST, collection(kind)),
        Some(p) => {
            body["metadata"]["resourceVersion"] = json!(p.resource_version);
            (reqwest::Method::PUT, format!("{}/{name}", collection(kind)))
        }
    };
    let v: Value = api.send_json(method, &path, &body).await?;
    decode(kind, &path, &v)
}
