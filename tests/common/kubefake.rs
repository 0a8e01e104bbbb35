//! A stand-in k3s API server for the rollout tests.
//!
//! It serves HTTPS on 127.0.0.1 and requires a client certificate signed by
//! its client CA, like k3s. Its answers come from the real manifests
//! directory under a test root: like k3s's deploy controller it turns each
//! stage file into an Addon whose checksum is the file's SHA-256 and whose
//! objects exist; like helm-controller it runs an install job per HelmChart
//! (a new job uid whenever the chart's spec changes). A scenario makes
//! files fail to apply, jobs fail, workloads stay unready, or the API
//! answer nothing. Objects use the shapes of `tests/fixtures/kube/*.json`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake cluster does.
#[derive(Debug, Default)]
pub struct Scenario {
    /// Addon names whose files k3s refuses, with the event message.
    pub reject: BTreeMap<String, String>,
    /// HelmChart names whose install job fails.
    pub failing_jobs: BTreeSet<String>,
    /// `kind/namespace/name` → the waiting reason of its pod (never ready).
    pub unready: BTreeMap<String, String>,
    /// Requests that must not be answered (simulates k3s down): readyz fails.
    pub down: bool,
    /// How many reads a deleted HelmChart lingers (its helm-delete job).
    pub delete_polls: u32,
    /// Every request path, in order.
    pub requests: Vec<String>,
    /// Alertmanager behind the service proxy: `service name → alertnames
    /// firing`. A service not listed has no endpoints.
    pub alertmanager: BTreeMap<String, Vec<String>>,
    /// Last accepted file content per Addon.
    accepted: BTreeMap<String, Vec<u8>>,
    /// HelmCharts being deleted → remaining reads.
    deleting: BTreeMap<String, u32>,
}

/// A running fake API server.
pub struct KubeFake {
    /// Its URL.
    pub url: String,
    /// Shared scenario.
    pub scenario: Arc<Mutex<Scenario>>,
    _thread: std::thread::JoinHandle<()>,
}

fn fixture(name: &str) -> Value {
    let p = super::repo().join("tests/fixtures/kube").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn item(list: &str, i: usize) -> Value {
    fixture(list)["items"][i].clone()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Generates a k3s-like PKI and writes the client side where sightline
/// looks for it (ROOT/var/lib/rancher/k3s/server/tls).
pub fn pki(root: &Path) -> super::pki::Pki {
    let pki = super::pki::generate();
    let tls = root.join("var/lib/rancher/k3s/server/tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("server-ca.crt"), &pki.server_ca).unwrap();
    std::fs::write(tls.join("client-admin.crt"), &pki.admin_cert).unwrap();
    std::fs::write(tls.join("client-admin.key"), &pki.admin_key).unwrap();
    pki
}

impl KubeFake {
    /// Starts a server for the test root `root` (its manifests directory and TLS files).
    pub fn start(root: &Path) -> KubeFake {
        let pki = pki(root);
        let manifests = root.join("var/lib/rancher/k3s/server/manifests/sightline");
        let scenario = Arc::new(Mutex::new(Scenario {
            delete_polls: 2,
            ..Default::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let sc = scenario.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(pki, manifests, sc, tx));
        });
        let port: u16 = rx.recv().unwrap();
        KubeFake {
            url: format!("https://127.0.0.1:{port}"),
            scenario,
            _thread: thread,
        }
    }

    /// Runs a closure on the scenario.
    pub fn with<R>(&self, f: impl FnOnce(&mut Scenario) -> R) -> R {
        f(&mut self.scenario.lock().unwrap())
    }
}

async fn serve(
    pki: super::pki::Pki,
    manifests: PathBuf,
    scenario: Arc<Mutex<Scenario>>,
    port_tx: std::sync::mpsc::Sender<u16>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.client_ca.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.serving_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.serving_key.as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    port_tx.send(listener.local_addr().unwrap().port()).unwrap();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let scenario = scenario.clone();
        let manifests = manifests.clone();
        tokio::spawn(async move {
            // A client without a certificate fails the handshake here.
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            loop {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte).await {
                        Ok(1) => buf.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = {
                    let mut s = scenario.lock().unwrap();
                    s.requests.push(path.clone());
                    route(&mut s, &manifests, &path)
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if tls.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn not_found(path: &str) -> (u16, String) {
    (404, json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":format!("{path} not found"),"reason":"NotFound","code":404}).to_string())
}

fn list(kind: &str, items: Vec<Value>) -> String {
    json!({"apiVersion":"v1","kind":kind,"metadata":{"resourceVersion":"1"},"items":items})
        .to_string()
}

fn docs(content: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(content);
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The deploy controller: read every stage file, accept or reject it.
fn sync(s: &mut Scenario, manifests: &Path) {
    let mut present = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(manifests) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".yaml") {
                continue;
            }
            let addon = name.split('.').next().unwrap().to_string();
            present.insert(addon.clone());
            if !s.reject.contains_key(&addon) {
                let data = std::fs::read(e.path()).unwrap();
                s.accepted.insert(addon, data);
            }
        }
    }
    // Deleting a file deletes nothing: accepted content stays.
    let charts_now: BTreeSet<String> = helmcharts(s).keys().cloned().collect();
    let before: Vec<String> = s.deleting.keys().cloned().collect();
    for c in before {
        if charts_now.contains(&c) {
            s.deleting.remove(&c);
        }
    }
    let _ = present;
}

fn helmcharts(s: &Scenario) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for content in s.accepted.values() {
        for d in docs(content) {
            if d["kind"] == "HelmChart" {
                out.insert(d["metadata"]["name"].as_str().unwrap().to_string(), d);
            }
        }
    }
    out
}

fn objects(s: &Scenario) -> BTreeSet<String> {
    s.accepted
        .values()
        .flat_map(|c| sightline::rollout::object_paths(c))
        .collect()
}

fn route(s: &mut Scenario, manifests: &Path, full: &str) -> (u16, String) {
    if s.down {
        return (503, "k3s is starting".into());
    }
    let before: BTreeSet<String> = helmcharts(s).keys().cloned().collect();
    sync(s, manifests);
    let after: BTreeSet<String> = helmcharts(s).keys().cloned().collect();
    for gone in before.difference(&after) {
        s.deleting.insert(gone.clone(), s.delete_polls);
    }
    let (path, query) = full.split_once('?').unwrap_or((full, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["readyz"] => (200, "ok".into()),
        // The API server's service proxy to Alertmanager's API v2 `GET
        // /alerts` (prometheus/alertmanager api/v2/openapi.yaml: an array of
        // gettableAlert; `filter` holds label matchers). kubernetes
        // pkg/registry/core/service/storage/storage.go (ResourceLocation)
        // answers 503 ServiceUnavailable "no endpoints available for
        // service" when nothing backs the Service.
        [
            "api",
            "v1",
            "namespaces",
            "monitoring",
            "services",
            svc_port,
            "proxy",
            "api",
            "v2",
            "alerts",
        ] => {
            let svc = svc_port.split(':').next().unwrap_or("");
            let Some(firing) = s.alertmanager.get(svc) else {
                return (
                    503,
                    json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":format!("no endpoints available for service \"{svc}\""),"reason":"ServiceUnavailable","code":503}).to_string(),
                );
            };
            let wanted = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("filter="))
                .map(|f| f.replace("%3D", "=").replace("%22", "\""));
            let alerts: Vec<Value> = firing
                .iter()
                .filter(|name| {
                    wanted
                        .as_deref()
                        .is_none_or(|w| w == format!("alertname=\"{name}\""))
                })
                .map(|name| {
                    json!({
                        "labels": {"alertname": name, "severity": "none"},
                        "annotations": {},
                        "startsAt": "2026-12-01T00:00:00Z",
                        "endsAt": "2999-01-01T00:00:00Z",
                        "updatedAt": "2026-12-01T00:00:00Z",
                        "fingerprint": "0000000000000001",
                        "receivers": [{"name": "default"}],
                        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}
                    })
                })
                .collect();
            (200, Value::Array(alerts).to_string())
        }
        [
            "apis",
            "k3s.cattle.io",
            "v1",
            "namespaces",
            "kube-system",
            "addons",
            name,
        ] => match s.accepted.get(*name) {
            Some(content) => {
                let mut a = item("addons.json", 0);
                a["metadata"]["name"] = json!(name);
                a["spec"]["checksum"] = json!(sha(content));
                a["spec"]["source"] = json!(format!(
                    "/var/lib/rancher/k3s/server/manifests/sightline/{name}.yaml"
                ));
                (200, a.to_string())
            }
            None => not_found(path),
        },
        ["api", "v1", "namespaces", "kube-system", "events"] => {
            let name = query
                .split("involvedObject.name%3D")
                .nth(1)
                .unwrap_or("")
                .split('&')
                .next()
                .unwrap_or("");
            let items = match s.reject.get(name) {
                Some(msg) => {
                    let mut e = item("events-addon-failed.json", 0);
                    e["type"] = json!("Warning");
                    e["reason"] = json!("ApplyManifestFailed");
                    e["message"] = json!(msg);
                    e["involvedObject"]["name"] = json!(name);
                    e["lastTimestamp"] = json!("2999-01-01T00:00:00Z");
                    vec![e]
                }
                None => vec![],
            };
            (200, list("EventList", items))
        }
        [
            "apis",
            "helm.cattle.io",
            "v1",
            "namespaces",
            "kube-system",
            "helmcharts",
            name,
        ] => {
            if let Some(hc) = helmcharts(s).get(*name) {
                let mut h = item("helmcharts.json", 0);
                h["metadata"]["name"] = json!(name);
                h["metadata"]["uid"] = json!(format!("hc-{name}"));
                h["spec"] = hc["spec"].clone();
                h["status"]["jobName"] = json!(format!("helm-install-{name}"));
                return (200, h.to_string());
            }
            match s.deleting.get_mut(*name) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    let mut h = item("helmcharts.json", 0);
                    h["metadata"]["name"] = json!(name);
                    h["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    (200, h.to_string())
                }
                _ => not_found(path),
            }
        }
        [
            "apis",
            "batch",
            "v1",
            "namespaces",
            "kube-system",
            "jobs",
            job,
        ] => {
            let chart = job.trim_start_matches("helm-install-");
            let Some(hc) = helmcharts(s).get(chart).cloned() else {
                return not_found(path);
            };
            let failing = s.failing_jobs.contains(chart);
            let mut j = item("jobs.json", if failing { 0 } else { 1 });
            j["metadata"]["name"] = json!(job);
            j["metadata"]["uid"] = json!(sha(hc["spec"].to_string().as_bytes())[..16].to_string());
            j["metadata"]["ownerReferences"][0]["uid"] = json!(format!("hc-{chart}"));
            j["spec"] = json!({"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": format!("job-{chart}")}}});
            (200, j.to_string())
        }
        ["api", "v1", "namespaces", ns, "pods"] => {
            let sel = query
                .replace("%3D", "=")
                .replace("%2F", "/")
                .replace("%2C", ",");
            let mut items = Vec::new();
            if let Some(chart) = sel.split("controller-uid=job-").nth(1) {
                if s.failing_jobs.contains(chart) {
                    let mut p = item("pods.json", 0);
                    p["metadata"]["name"] = json!(format!("helm-install-{chart}-x1"));
                    p["status"]["containerStatuses"] = json!([{"name":"helm","state":{"terminated":{"exitCode":1,"reason":"Error"}}}]);
                    items.push(p);
                }
            } else {
                for (w, reason) in &s.unready {
                    let parts: Vec<&str> = w.split('/').collect();
                    if parts[1] == *ns
                        && sel.contains(&format!("app.kubernetes.io/name={}", parts[2]))
                    {
                        let mut p = item("pods.json", 0);
                        p["metadata"]["name"] = json!(format!("{}-abc12", parts[2]));
                        p["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": reason, "message": format!("Back-off pulling image for {}", parts[2])}});
                        items.push(p);
                    }
                }
            }
            (200, list("PodList", items))
        }
        ["apis", "apps", "v1", "namespaces", ns, kind_plural, name] => {
            let kind = kind_plural.trim_end_matches('s');
            let key = format!("{kind}/{ns}/{name}");
            let unready = s.unready.contains_key(&key);
            let fixture = match kind {
                "deployment" => "deployments.json",
                "daemonset" => "daemonsets.json",
                "statefulset" => "statefulsets.json",
                _ => return not_found(path),
            };
            // Each fixture list holds one ready and one unready object.
            let ready_index = if kind == "statefulset" { 0 } else { 1 };
            let mut w = item(
                fixture,
                if unready {
                    1 - ready_index
                } else {
                    ready_index
                },
            );
            w["metadata"]["name"] = json!(name);
            w["metadata"]["namespace"] = json!(ns);
            w["spec"]["selector"] = json!({"matchLabels": {"app.kubernetes.io/name": name}});
            (200, w.to_string())
        }
        _ => {
            if objects(s).contains(path) {
                (200, json!({"metadata": {"name": parts.last()}}).to_string())
            } else {
                not_found(path)
            }
        }
    }
}
