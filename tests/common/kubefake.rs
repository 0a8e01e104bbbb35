//! A stand-in k3s API server for the rollout tests.
//!
//! It serves HTTPS on 127.0.0.1 and requires a client certificate signed by
//! its client CA, like k3s. Its answers come from the real manifests
//! directory under a test root, through models of the two upstream
//! controllers that act on it, each citing the upstream code it follows:
//!
//! * k3s's deploy controller (`pkg/deploy/controller.go`): scans the
//!   directory, creates the Addon before applying, records Warning events
//!   on a failed apply and retries the file on every scan, and writes
//!   `spec.checksum` only after a successful apply;
//! * helm-controller (`pkg/controllers/chart/chart.go`, v0.17.7): one install
//!   Job per HelmChart, replaced (same name, new uid) only when the chart's
//!   `spec` changes, and a `Failed` condition on the HelmChart that stays
//!   until the failed Job has been replaced.
//!
//! It also serves what the coordination of several servers needs, with the
//! apiserver's optimistic concurrency (k8s.io/apiserver
//! `pkg/registry/generic/registry/store.go`: `Create` answers 409
//! `AlreadyExists` for an existing name, `Update` answers 409 `Conflict`
//! when the body's `metadata.resourceVersion` is not the stored one, and
//! every write stores a new `resourceVersion`): `leases`, `configmaps` and
//! `secrets` in kube-system, and `nodes` (list, get, merge patch). Started
//! with several server roots ([`KubeFake::start_cluster`]), it is one
//! cluster whose deploy controller applies every server's manifests
//! directory into the one Addon store, as each k3s server does with its
//! own directory; files that differ between servers show up as an Addon
//! whose checksum flaps ([`Scenario::checksums`]).
//!
//! A scenario makes files fail to apply, jobs fail, workloads stay unready,
//! the API answer nothing, or k3s report another version. Objects use the
//! shapes of `tests/fixtures/kube/*.json`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where k3s's deploy controller finds sightline's files (the path it
/// reports in `spec.source` and in event messages).
const K3S_MANIFESTS: &str = "/var/lib/rancher/k3s/server/manifests/sightline";

/// How k3s's apply of one file fails.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The apply error (the part after "Applying manifest at ... failed: ").
    pub message: String,
    /// How many more scans fail before the apply succeeds (a CRD not yet
    /// discovered, a webhook not yet ready); None: every scan.
    pub scans: Option<u32>,
}

impl Reject {
    /// Fails on every scan.
    pub fn always(message: &str) -> Reject {
        Reject {
            message: message.into(),
            scans: None,
        }
    }

    /// Fails on the next `scans` scans, then succeeds.
    pub fn for_scans(scans: u32, message: &str) -> Reject {
        Reject {
            message: message.into(),
            scans: Some(scans),
        }
    }
}

/// What the fake cluster does.
#[derive(Debug)]
pub struct Scenario {
    /// Addon names whose files k3s fails to apply.
    pub reject: BTreeMap<String, Reject>,
    /// HelmChart names whose install jobs, created from now on, fail.
    pub failing_jobs: BTreeSet<String>,
    /// `kind/namespace/name` → the waiting reason of its pod (never ready).
    pub unready: BTreeMap<String, String>,
    /// Requests that must not be answered (simulates k3s down): readyz fails.
    pub down: bool,
    /// How many reads a deleted HelmChart lingers (its helm-delete job).
    pub delete_polls: u32,
    /// How many requests pass before helm-controller replaces an install
    /// Job whose chart spec changed: `reconcileJob` waits for the job
    /// controller's sync and for the old pods to terminate.
    pub replace_polls: u32,
    /// The `gitVersion` that `/version` answers.
    pub version: String,
    /// Every request path, in order.
    pub requests: Vec<String>,
    /// Alertmanager behind the service proxy: `service name → alertnames
    /// firing`. A service not listed has no endpoints.
    pub alertmanager: BTreeMap<String, Vec<String>>,
    /// Apply attempts per Addon (successful or not).
    pub attempts: BTreeMap<String, u32>,
    /// Nodes `GET /api/v1/nodes` lists (see [`node`]).
    pub nodes: Vec<Value>,
    /// Stored objects by `plural/name` (leases, configmaps, secrets).
    pub objects: BTreeMap<String, Value>,
    /// Every checksum each Addon took, in order: a value that comes back
    /// after another is a flap.
    pub checksums: BTreeMap<String, Vec<String>>,
    /// Hold back the answers to the first reads of the Lease until this
    /// many have been read (or 10 s passed): servers that start at once all
    /// read "no Lease" before any of them writes, the race the apiserver's
    /// conflicts settle.
    pub lease_barrier: usize,
    lease_reads: usize,
    /// Writes refused with 409, by `plural/name`.
    pub conflicts: BTreeMap<String, u32>,
    /// Added to every answer about the coordination objects (leases,
    /// configmaps, secrets, nodes), as a distant API server would: a test
    /// sees how many round trips a pass waits for one after the other.
    pub coordination_latency: std::time::Duration,
    /// Each coordination request: its line (as in `requests`) and when it
    /// arrived and was answered.
    pub coordination_timings: Vec<(String, std::time::Instant, std::time::Instant)>,
    /// The last `resourceVersion` handed out.
    resource_version: u64,
    /// Directories whose first (forced) scan ran.
    scanned: BTreeSet<PathBuf>,
    /// mtime per file, cached only after a successful apply.
    mtimes: BTreeMap<PathBuf, SystemTime>,
    addons: BTreeMap<String, Addon>,
    events: Vec<Value>,
    jobs: BTreeMap<String, Job>,
    /// Charts whose status still says Failed=True after their failed Job was deleted.
    failed_status: BTreeSet<String>,
    /// HelmCharts being deleted → remaining reads.
    deleting: BTreeMap<String, u32>,
    /// Objects an Addon once held and its last apply dropped: wrangler
    /// deletes them (see `deploy`), so the workload routes, which otherwise
    /// answer for any name, must say 404 for these.
    deleted: BTreeSet<String>,
    next_uid: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            reject: BTreeMap::new(),
            failing_jobs: BTreeSet::new(),
            unready: BTreeMap::new(),
            down: false,
            delete_polls: 2,
            replace_polls: 3,
            version: "v1.33.4+k3s1".into(),
            requests: Vec::new(),
            alertmanager: BTreeMap::new(),
            attempts: BTreeMap::new(),
            nodes: Vec::new(),
            objects: BTreeMap::new(),
            checksums: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            lease_barrier: 0,
            lease_reads: 0,
            coordination_latency: std::time::Duration::ZERO,
            coordination_timings: Vec::new(),
            resource_version: 100,
            scanned: BTreeSet::new(),
            mtimes: BTreeMap::new(),
            addons: BTreeMap::new(),
            events: Vec::new(),
            jobs: BTreeMap::new(),
            failed_status: BTreeSet::new(),
            deleting: BTreeMap::new(),
            deleted: BTreeSet::new(),
            next_uid: 1,
        }
    }
}

impl Scenario {
    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_uid)
    }
}

/// k3s's Addon: created before the first apply, checksum only after a good one.
#[derive(Debug)]
struct Addon {
    uid: String,
    source: String,
    checksum: Option<String>,
    /// The content of the last successful apply: what exists in the cluster.
    applied: Option<Vec<u8>>,
    /// The HelmCharts in `applied`, parsed once (every request asks).
    charts: Vec<Value>,
}

/// helm-controller's install Job for one chart.
#[derive(Debug)]
struct Job {
    uid: String,
    /// The chart spec it was built from.
    spec: Value,
    failed: bool,
    /// Requests left before a spec change replaces it.
    replace_in: Option<u32>,
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
        Self::start_cluster(&[root])
    }

    /// Starts one API for a cluster whose servers are the test roots
    /// `roots`: each gets the same TLS material, and the deploy controller
    /// applies every root's manifests directory into the one Addon store.
    pub fn start_cluster(roots: &[&Path]) -> KubeFake {
        Self::start_in(roots, None)
    }

    /// Starts a server for a container's root whose network namespace is
    /// the one of the host process `pid` (its init): the server's socket
    /// is bound to 127.0.0.1 inside that namespace (a thread may enter
    /// another network namespace on its own, setns(2)), so sightline in a
    /// container with a private network reaches it as it reaches k3s.
    pub fn start_in_netns(root: &Path, pid: u32) -> KubeFake {
        Self::start_in(&[root], Some(PathBuf::from(format!("/proc/{pid}/ns/net"))))
    }

    fn start_in(roots: &[&Path], netns: Option<PathBuf>) -> KubeFake {
        let pki = pki(roots[0]);
        for r in &roots[1..] {
            let tls = r.join("var/lib/rancher/k3s/server/tls");
            std::fs::create_dir_all(&tls).unwrap();
            std::fs::write(tls.join("server-ca.crt"), &pki.server_ca).unwrap();
            std::fs::write(tls.join("client-admin.crt"), &pki.admin_cert).unwrap();
            std::fs::write(tls.join("client-admin.key"), &pki.admin_key).unwrap();
        }
        let manifests: Vec<PathBuf> = roots
            .iter()
            .map(|r| r.join("var/lib/rancher/k3s/server/manifests/sightline"))
            .collect();
        let scenario = Arc::new(Mutex::new(Scenario::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sc = scenario.clone();
        let thread = std::thread::spawn(move || {
            if let Some(ns) = netns {
                let f = std::fs::File::open(&ns)
                    .unwrap_or_else(|e| panic!("opening {}: {e}", ns.display()));
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering {}: {e}", ns.display()));
            }
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

    /// REST paths of the objects that exist now: those in the last applied
    /// content of each Addon.
    pub fn live_objects(&self) -> BTreeSet<String> {
        objects(&self.scenario.lock().unwrap())
    }

    /// Runs a closure on the scenario.
    pub fn with<R>(&self, f: impl FnOnce(&mut Scenario) -> R) -> R {
        f(&mut self.scenario.lock().unwrap())
    }
}

async fn serve(
    pki: super::pki::Pki,
    manifests: Vec<PathBuf>,
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
                let method = head.split_whitespace().next().unwrap_or("GET").to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                if tls.read_exact(&mut body).await.is_err() {
                    return;
                }
                let arrived = std::time::Instant::now();
                let line = if method == "GET" {
                    path.clone()
                } else {
                    format!("{method} {path}")
                };
                let (status, body, latency) = {
                    let mut s = scenario.lock().unwrap();
                    s.requests.push(line.clone());
                    let latency = is_coordination(&path).then_some(s.coordination_latency);
                    let (status, body) = if method == "GET" {
                        route(&mut s, &manifests, &path)
                    } else {
                        write(&mut s, &manifests, &method, &path, &body)
                    };
                    (status, body, latency)
                };
                if let Some(latency) = latency {
                    tokio::time::sleep(latency).await;
                    let answered = std::time::Instant::now();
                    scenario
                        .lock()
                        .unwrap()
                        .coordination_timings
                        .push((line, arrived, answered));
                }
                // The answer is read now and held back until the others
                // have read too.
                if method == "GET" && path.ends_with("/leases/sightline") {
                    hold_for_barrier(&scenario).await;
                }
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

/// A request about the objects servers coordinate through.
fn is_coordination(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path.starts_with("/api/v1/nodes")
        || path.contains("/leases")
        || path.contains("/kube-system/configmaps")
        || path.contains("/kube-system/secrets")
}

/// How long at least one of `timings` was in flight: the time a client
/// waited for them, however many it sent at once.
pub fn in_flight(
    timings: &[(String, std::time::Instant, std::time::Instant)],
) -> std::time::Duration {
    let mut spans: Vec<(std::time::Instant, std::time::Instant)> =
        timings.iter().map(|(_, a, b)| (*a, *b)).collect();
    spans.sort();
    let mut total = std::time::Duration::ZERO;
    let mut current: Option<(std::time::Instant, std::time::Instant)> = None;
    for (a, b) in spans {
        match current {
            Some((ca, cb)) if a <= cb => current = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                current = Some((a, b));
            }
            None => current = Some((a, b)),
        }
    }
    if let Some((a, b)) = current {
        total += b - a;
    }
    total
}

/// How many of `timings` were waited for one after the other: the longest
/// chain of requests each sent only after the previous one was answered.
/// Requests sent together count once, however slowly this single-threaded
/// stand-in gets to each of them.
pub fn round_trips(timings: &[(String, std::time::Instant, std::time::Instant)]) -> usize {
    let mut spans: Vec<(std::time::Instant, std::time::Instant)> =
        timings.iter().map(|(_, a, b)| (*a, *b)).collect();
    spans.sort();
    let mut depth: Vec<usize> = Vec::new();
    for (i, (arrived, _)) in spans.iter().enumerate() {
        let before = (0..i)
            .filter(|j| spans[*j].1 <= *arrived)
            .map(|j| depth[j])
            .max()
            .unwrap_or(0);
        depth.push(before + 1);
    }
    depth.into_iter().max().unwrap_or(0)
}

async fn hold_for_barrier(scenario: &Mutex<Scenario>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let hold = {
        let mut s = scenario.lock().unwrap();
        s.lease_reads += 1;
        s.lease_reads <= s.lease_barrier
    };
    while hold && std::time::Instant::now() < deadline {
        let reached = {
            let s = scenario.lock().unwrap();
            s.lease_reads >= s.lease_barrier
        };
        if reached {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn not_found(path: &str) -> (u16, String) {
    (404, json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":format!("{path} not found"),"reason":"NotFound","code":404}).to_string())
}

fn list(kind: &str, items: Vec<Value>) -> String {
    json!({"apiVersion":"v1","kind":kind,"metadata":{"resourceVersion":"1"},"items":items})
        .to_string()
}

/// The documents of a file as k3s's `yamlToObjects` sees them: a document
/// that does not parse fails the whole file; empty ones are dropped.
fn parse(content: &[u8]) -> Result<Vec<Value>, String> {
    let text = String::from_utf8_lossy(content);
    let mut out = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = <Value as serde::Deserialize>::deserialize(d).map_err(|e| e.to_string())?;
        if v.is_object() {
            out.push(v);
        }
    }
    Ok(out)
}

fn docs(content: &[u8]) -> Vec<Value> {
    parse(content).unwrap_or_default()
}

fn now() -> String {
    sightline::clock::rfc3339(SystemTime::now())
}

/// Records an event the way client-go's recorder does: an identical event
/// (same object, type, reason, message) raises `count` and `lastTimestamp`
/// of the existing one rather than adding another.
fn record(s: &mut Scenario, addon: &str, kind: &str, reason: &str, message: String) {
    let t = now();
    let uid = s
        .addons
        .get(addon)
        .map(|a| a.uid.clone())
        .unwrap_or_default();
    if let Some(e) = s.events.iter_mut().find(|e| {
        e["involvedObject"]["name"] == addon
            && e["type"] == kind
            && e["reason"] == reason
            && e["message"] == message.as_str()
    }) {
        e["count"] = json!(e["count"].as_u64().unwrap_or(1) + 1);
        e["lastTimestamp"] = json!(t);
        return;
    }
    let mut e = item("events-addon-failed.json", 0);
    let n = s.events.len();
    e["metadata"]["name"] = json!(format!("{addon}.{n:016x}"));
    e["metadata"]["creationTimestamp"] = json!(t);
    e["involvedObject"]["name"] = json!(addon);
    e["involvedObject"]["uid"] = json!(uid);
    e["type"] = json!(kind);
    e["reason"] = json!(reason);
    e["message"] = json!(message);
    e["count"] = json!(1);
    e["firstTimestamp"] = json!(t);
    e["lastTimestamp"] = json!(t);
    s.events.push(e);
}

/// What the apiserver refuses in a file: the scenario's rejection, and the
/// HelmChart CRD's enum for `spec.failurePolicy` (helm-controller v0.17.7
/// `pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml`).
fn refusal(s: &mut Scenario, addon: &str, objs: &[Value]) -> Option<String> {
    if let Some(r) = s.reject.get_mut(addon) {
        match r.scans {
            Some(0) => {}
            Some(ref mut n) => {
                *n -= 1;
                return Some(r.message.clone());
            }
            None => return Some(r.message.clone()),
        }
    }
    for o in objs.iter().filter(|o| o["kind"] == "HelmChart") {
        if let Some(fp) = o["spec"]["failurePolicy"].as_str()
            && !["abort", "reinstall", "retry"].contains(&fp)
        {
            return Some(format!(
                "failed to create kube-system/{} helm.cattle.io/v1, Kind=HelmChart for  kube-system/{addon}: HelmChart.helm.cattle.io {:?} is invalid: spec.failurePolicy: Unsupported value: {fp:?}: supported values: \"abort\", \"reinstall\", \"retry\"",
                o["metadata"]["name"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            ));
        }
    }
    None
}

/// k3s `deploy()`: the Addon is created first (so events can name it), the
/// checksum compared, the file parsed and applied; `spec.checksum` is
/// written only after the apply succeeded.
fn deploy(s: &mut Scenario, path: &Path, compare_checksum: bool) -> Result<(), ()> {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    // `basename`: everything before the first dot.
    let name = file.split('.').next().unwrap().to_string();
    let source = format!("{K3S_MANIFESTS}/{file}");
    if !s.addons.contains_key(&name) {
        let uid = s.uid();
        s.addons.insert(
            name.clone(),
            Addon {
                uid,
                source: source.clone(),
                checksum: None,
                applied: None,
                charts: Vec::new(),
            },
        );
    }
    s.addons.get_mut(&name).unwrap().source = source.clone();
    let content = match std::fs::read(path) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("Read manifest at {source:?} failed: {e}");
            record(s, &name, "Warning", "ReadManifestFailed", msg);
            return Err(());
        }
    };
    let sum = sha(&content);
    if compare_checksum && s.addons[&name].checksum.as_deref() == Some(sum.as_str()) {
        return Ok(());
    }
    *s.attempts.entry(name.clone()).or_default() += 1;
    let objs = match parse(&content) {
        Ok(o) => o,
        Err(e) => {
            let msg = format!("Parse manifest at {source:?} failed: {e}");
            record(s, &name, "Warning", "ParseManifestFailed", msg);
            return Err(());
        }
    };
    record(
        s,
        &name,
        "Normal",
        "ApplyingManifest",
        format!("Applying manifest at {source:?}"),
    );
    if let Some(why) = refusal(s, &name, &objs) {
        let msg = format!("Applying manifest at {source:?} failed: {why}");
        record(s, &name, "Warning", "ApplyManifestFailed", msg);
        return Err(());
    }
    record(
        s,
        &name,
        "Normal",
        "AppliedManifest",
        format!("Applied manifest at {source:?}"),
    );
    // wrangler's apply with the Addon as owner deletes the objects the
    // new content no longer lists (`desiredset_process.go` `compareSets`);
    // an empty file puts it in remove mode and deletes them all
    // (`desiredset_apply.go` L76-78). See docs/research/k3s.md, "Pruning".
    let old: BTreeSet<String> = s.addons[&name]
        .applied
        .as_deref()
        .map(sightline::rollout::object_paths)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new: BTreeSet<String> = sightline::rollout::object_paths(&content)
        .into_iter()
        .collect();
    s.deleted.extend(old.difference(&new).cloned());
    for p in &new {
        s.deleted.remove(p);
    }
    let history = s.checksums.entry(name.clone()).or_default();
    if history.last() != Some(&sum) {
        history.push(sum.clone());
    }
    let a = s.addons.get_mut(&name).unwrap();
    a.checksum = Some(sum);
    a.charts = docs(&content)
        .into_iter()
        .filter(|d| d["kind"] == "HelmChart")
        .collect();
    a.applied = Some(content);
    Ok(())
}

/// One pass of k3s's `listFilesIn`: every manifest in name order; a file
/// whose mtime is cached (only after a successful apply) is skipped, so a
/// failed file is applied again on every scan. The first scan is forced
/// and re-applies everything. k3s scans every 15 s; the stand-in scans on
/// every request, so a test's polls are its scans. Each server's
/// controller keeps its own cache and does its own first forced scan.
fn scan(s: &mut Scenario, manifests: &Path) {
    let force = s.scanned.insert(manifests.to_path_buf());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(manifests)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().to_lowercase();
        if name.starts_with('.') || ![".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x)) {
            continue;
        }
        let Ok(mtime) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        if !force && s.mtimes.get(&path) == Some(&mtime) {
            continue;
        }
        if deploy(s, &path, !force).is_ok() {
            s.mtimes.insert(path, mtime);
        }
    }
}

/// A HelmChart's spec as the apiserver stores it: the CRD's defaults filled
/// in (`failurePolicy: reinstall`, `driver: secret`; helm-controller v0.17.7
/// `pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml`).
fn stored_spec(doc: &Value) -> Value {
    let mut spec = doc["spec"].clone();
    for (k, v) in [("failurePolicy", "reinstall"), ("driver", "secret")] {
        if spec.get(k).is_none() {
            spec[k] = json!(v);
        }
    }
    spec
}

/// The HelmCharts that exist: those in the last applied content of each Addon.
fn helmcharts(s: &Scenario) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for a in s.addons.values() {
        for d in &a.charts {
            out.insert(
                d["metadata"]["name"].as_str().unwrap().to_string(),
                d.clone(),
            );
        }
    }
    out
}

/// helm-controller: one install Job per chart, built from the chart's name
/// and spec only (`job()`), so labels never replace it. A spec change
/// replaces it once `reconcileJob` lets it (after `replace_polls` requests
/// here) through `apply.ErrReplace`: the old Job is deleted, and the new
/// one (same name, new uid) is created by a later sync (the next request
/// here). `Failed=True` on the HelmChart stays from the old Job's failure
/// until the sync that creates the new Job rewrites the status.
fn reconcile_jobs(s: &mut Scenario) {
    let charts = helmcharts(s);
    s.jobs.retain(|name, _| charts.contains_key(name));
    s.failed_status.retain(|name| charts.contains_key(name));
    for (name, doc) in charts {
        let spec = stored_spec(&doc);
        let Some(j) = s.jobs.get_mut(&name) else {
            let uid = s.uid();
            let failed = s.failing_jobs.contains(&name);
            s.failed_status.remove(&name);
            s.jobs.insert(
                name,
                Job {
                    uid,
                    spec,
                    failed,
                    replace_in: None,
                },
            );
            continue;
        };
        let left = if j.spec == spec {
            None
        } else {
            Some(
                j.replace_in
                    .map_or(s.replace_polls, |n| n.saturating_sub(1)),
            )
        };
        j.replace_in = left;
        if left == Some(0) {
            if j.failed {
                s.failed_status.insert(name.clone());
            }
            s.jobs.remove(&name);
        }
    }
}

fn objects(s: &Scenario) -> BTreeSet<String> {
    s.addons
        .values()
        .filter_map(|a| a.applied.as_deref())
        .flat_map(sightline::rollout::object_paths)
        .collect()
}

/// `GET /version`: the apiserver's `version.Info` (k8s.io/apimachinery
/// `pkg/version/types.go`), in which k3s reports its own release as
/// `gitVersion` (`v1.33.4+k3s1`) and the Kubernetes minor as `minor`.
fn version_json(git_version: &str) -> String {
    let mut v = fixture("version.json");
    let mut parts = git_version.trim_start_matches('v').split('.');
    v["major"] = json!(parts.next().unwrap_or(""));
    v["minor"] = json!(parts.next().unwrap_or(""));
    v["gitVersion"] = json!(git_version);
    v.to_string()
}

/// What every request drives: the deploy controllers' scans of every
/// server's directory and helm-controller's reconcile.
fn controllers(s: &mut Scenario, manifests: &[PathBuf]) {
    let before: BTreeSet<String> = helmcharts(s).keys().cloned().collect();
    for m in manifests {
        scan(s, m);
    }
    reconcile_jobs(s);
    let after: BTreeSet<String> = helmcharts(s).keys().cloned().collect();
    for gone in before.difference(&after) {
        s.deleting.insert(gone.clone(), s.delete_polls);
    }
    for back in &after {
        s.deleting.remove(back);
    }
}

fn route(s: &mut Scenario, manifests: &[PathBuf], full: &str) -> (u16, String) {
    if s.down {
        return (503, "k3s is starting".into());
    }
    controllers(s, manifests);
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
        ["api", "v1", "nodes"] => (200, list("NodeList", s.nodes.clone())),
        ["api", "v1", "nodes", name] => {
            match s.nodes.iter().find(|n| n["metadata"]["name"] == *name) {
                Some(n) => (200, n.to_string()),
                None => not_found(path),
            }
        }
        [.., name] if stored_kind(&parts).is_some() => {
            let plural = stored_kind(&parts).unwrap();
            match s.objects.get(&format!("{plural}/{name}")) {
                Some(o) => (200, o.to_string()),
                None => not_found(path),
            }
        }
        ["version"] => (200, version_json(&s.version)),
        [
            "apis",
            "k3s.cattle.io",
            "v1",
            "namespaces",
            "kube-system",
            "addons",
            name,
        ] => match s.addons.get(*name) {
            Some(addon) => {
                let mut a = item("addons.json", 0);
                a["metadata"]["name"] = json!(name);
                a["metadata"]["uid"] = json!(addon.uid);
                a["spec"]["source"] = json!(addon.source);
                match &addon.checksum {
                    Some(c) => a["spec"]["checksum"] = json!(c),
                    None => {
                        a["spec"].as_object_mut().unwrap().remove("checksum");
                    }
                }
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
            let items = s
                .events
                .iter()
                .filter(|e| e["involvedObject"]["name"] == name)
                .cloned()
                .collect();
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
            if let Some(doc) = helmcharts(s).get(*name) {
                let mut h = item("helmcharts.json", 0);
                h["metadata"]["name"] = json!(name);
                h["metadata"]["uid"] = json!(format!("hc-{name}"));
                h["metadata"]["labels"] = doc["metadata"]["labels"].clone();
                h["spec"] = stored_spec(doc);
                h["status"]["jobName"] = json!(format!("helm-install-{name}"));
                // chart.go OnChange: Failed=True is written while the
                // current Job has failed and stays until the sync that
                // creates its replacement writes Failed=False.
                if s.jobs.get(*name).is_some_and(|j| j.failed) || s.failed_status.contains(*name) {
                    h["status"]["conditions"][1] = json!({"type": "Failed", "status": "True",
                        "reason": "Job failed", "message": "Job has reached configured number of retries without succeeding"});
                }
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
            let Some(fj) = s.jobs.get(chart) else {
                return not_found(path);
            };
            let mut j = item("jobs.json", if fj.failed { 0 } else { 1 });
            j["metadata"]["name"] = json!(job);
            j["metadata"]["uid"] = json!(fj.uid);
            j["metadata"]["ownerReferences"][0]["uid"] = json!(format!("hc-{chart}"));
            j["spec"] = json!({"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": fj.uid}}});
            (200, j.to_string())
        }
        ["api", "v1", "namespaces", ns, "pods"] => {
            let sel = query
                .replace("%3D", "=")
                .replace("%2F", "/")
                .replace("%2C", ",");
            let mut items = Vec::new();
            if let Some(uid) = sel.split("controller-uid=").nth(1) {
                if let Some((chart, _)) = s.jobs.iter().find(|(_, j)| j.uid == uid && j.failed) {
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
            if s.deleted.contains(path) {
                return not_found(path);
            }
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

/// A Node as the kubelet reports it (k8s.io/api `core/v1` `NodeStatus`:
/// `allocatable.memory` as a quantity, `nodeInfo.architecture` as GOARCH),
/// with k3s's role label on servers.
pub fn node(name: &str, arch: &str, allocatable_memory: &str, server: bool) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/arch": arch});
    if server {
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
        labels["node-role.kubernetes.io/master"] = json!("true");
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {}, "resourceVersion": "1"},
        "status": {
            "allocatable": {"cpu": "4", "memory": allocatable_memory, "pods": "110"},
            "nodeInfo": {"architecture": arch, "kernelVersion": "6.6.51", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.21-k3s2", "kubeletVersion": "v1.33.4+k3s1", "operatingSystem": "linux"}
        }
    })
}

fn status(code: u16, reason: &str, message: String) -> (u16, String) {
    (
        code,
        json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":message,"reason":reason,"code":code}).to_string(),
    )
}

/// The kind (plural) of a stored object's path `.../<plural>/<name>`:
/// leases (coordination.k8s.io/v1), configmaps and secrets (v1), all in
/// kube-system.
fn stored_kind<'a>(parts: &[&'a str]) -> Option<&'a str> {
    match parts {
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            "kube-system",
            "leases",
            _,
        ] => Some("leases"),
        [
            "api",
            "v1",
            "namespaces",
            "kube-system",
            kind @ ("configmaps" | "secrets"),
            _,
        ] => Some(kind),
        _ => None,
    }
}

/// POST, PUT and PATCH, with the generic registry's rules (k8s.io/apiserver
/// `pkg/registry/generic/registry/store.go`): create refuses an existing
/// name (409 AlreadyExists); update refuses a missing object (404, these
/// kinds do not allow create-on-update) and a stale `resourceVersion` (409
/// Conflict); each write stores a new `resourceVersion`. Nodes take a JSON
/// merge patch (RFC 7386) of their annotations.
fn write(
    s: &mut Scenario,
    manifests: &[PathBuf],
    method: &str,
    full: &str,
    body: &[u8],
) -> (u16, String) {
    if s.down {
        return (503, "k3s is starting".into());
    }
    controllers(s, manifests);
    let path = full.split_once('?').map_or(full, |(p, _)| p);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into());
    };
    s.resource_version += 1;
    let rv = s.resource_version.to_string();
    if let (["api", "v1", "nodes", name], "PATCH") = (parts.as_slice(), method) {
        let Some(n) = s.nodes.iter_mut().find(|n| n["metadata"]["name"] == *name) else {
            return not_found(path);
        };
        if let Some(a) = obj["metadata"]["annotations"].as_object() {
            for (k, v) in a {
                n["metadata"]["annotations"][k] = v.clone();
            }
        }
        n["metadata"]["resourceVersion"] = json!(rv);
        return (200, n.to_string());
    }
    // A POST names its collection; the object's name is in the body.
    let mut named = parts.clone();
    if method == "POST" {
        named.push(obj["metadata"]["name"].as_str().unwrap_or(""));
    }
    let (Some(plural), Some(name)) = (stored_kind(&named), named.last().map(|n| n.to_string()))
    else {
        return status(405, "MethodNotAllowed", format!("{method} {path}"));
    };
    if !["POST", "PUT"].contains(&method) {
        return status(405, "MethodNotAllowed", format!("{method} {path}"));
    }
    let key = format!("{plural}/{name}");
    let stored = s.objects.get(&key);
    match (method, stored) {
        ("POST", Some(_)) => {
            *s.conflicts.entry(key.clone()).or_default() += 1;
            return status(
                409,
                "AlreadyExists",
                format!("{plural} {name:?} already exists"),
            );
        }
        ("PUT", None) => return not_found(path),
        ("PUT", Some(cur)) => {
            let sent = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if !sent.is_empty() && sent != cur["metadata"]["resourceVersion"] {
                *s.conflicts.entry(key.clone()).or_default() += 1;
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {plural} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            obj["metadata"]["uid"] = cur["metadata"]["uid"].clone();
            obj["metadata"]["creationTimestamp"] = cur["metadata"]["creationTimestamp"].clone();
        }
        _ => {
            let uid = s.uid();
            obj["metadata"]["uid"] = json!(uid);
            obj["metadata"]["creationTimestamp"] = json!(now());
        }
    }
    obj["metadata"]["resourceVersion"] = json!(rv);
    s.objects.insert(key, obj.clone());
    (if method == "POST" { 201 } else { 200 }, obj.to_string())
}

impl Scenario {
    /// Addons whose checksum went back to a value it had before another:
    /// two servers' files fighting over one Addon.
    pub fn flapping(&self) -> Vec<String> {
        self.checksums
            .iter()
            .filter(|(_, h)| {
                let mut seen = BTreeSet::new();
                !h.iter().all(|c| seen.insert(c))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}
