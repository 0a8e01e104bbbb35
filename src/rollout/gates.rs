//! The health gates, as pure functions over API objects (serde_json values
//! with the real shapes of Kubernetes and k3s JSON). A stage is healthy when
//! all three hold: k3s applied the file, the install job for the current
//! HelmChart spec completed, and the named workloads are ready.

use serde_json::Value;

/// What a gate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Satisfied.
    Ok,
    /// Not yet; the reason says what it waits for.
    Pending(String),
    /// Upstream failed and retries on its own; the reason is the last
    /// failure. Final only when the gate's timeout passes.
    Retrying(String),
    /// Will not get there without a change; the reason says why.
    Failed(String),
}

impl Gate {
    /// True when satisfied.
    pub fn is_ok(&self) -> bool {
        matches!(self, Gate::Ok)
    }
}

/// Event reasons k3s's deploy controller uses when a file cannot be applied.
const ADDON_FAILURES: [&str; 4] = [
    "ApplyManifestFailed",
    "ValidateManifestFailed",
    "ParseManifestFailed",
    "ReadManifestFailed",
];

/// k3s applied the file: the Addon's `spec.checksum` is the file's SHA-256.
///
/// A failure event newer than the write is not final: k3s's deploy
/// controller caches a file's mtime only after a successful apply, so it
/// applies a failed file again on every scan (~15 s; k3s
/// `pkg/deploy/controller.go` `listFilesIn`/`deploy`). A CRD not yet
/// discovered or a webhook not yet ready clears on a later scan.
pub fn addon(addon: Option<&Value>, events: &[Value], file_sha256: &str, written_at: &str) -> Gate {
    let checksum = addon.and_then(|a| a["spec"]["checksum"].as_str());
    if checksum == Some(file_sha256) {
        return Gate::Ok;
    }
    let newest_failure = events
        .iter()
        .filter(|e| e["type"].as_str() == Some("Warning"))
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| ADDON_FAILURES.contains(&r))
        })
        .filter(|e| event_time(e) >= written_at)
        .max_by(|a, b| event_time(a).cmp(event_time(b)));
    match (newest_failure, addon) {
        (Some(e), _) => Gate::Retrying(format!(
            "k3s could not apply the file ({}): {}",
            e["reason"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default()
        )),
        (None, None) => Gate::Pending("k3s has not picked up the file yet (no Addon)".into()),
        (None, Some(_)) => Gate::Pending("k3s has not applied this version of the file yet".into()),
    }
}

/// The newest of an event's timestamps, RFC 3339.
pub fn event_time(e: &Value) -> &str {
    [
        "lastTimestamp",
        "eventTime",
        "firstTimestamp",
        "metadata.creationTimestamp",
    ]
    .iter()
    .filter_map(|k| match k.split_once('.') {
        Some((a, b)) => e[a][b].as_str(),
        None => e[*k].as_str(),
    })
    .max()
    .unwrap_or("")
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(kind) && c["status"].as_str() == Some("True"))
}

/// The reason helm-controller writes with `Failed=True` when the install
/// Job failed (`chart.go` `OnChange`, v0.17.6+). That status stays until the
/// Job has been replaced and the next sync rewrites it, so it says nothing
/// about a Job that has not failed itself.
const JOB_FAILED_REASON: &str = "Job failed";

/// A `Failed=True` condition on the HelmChart that is not about a Job (an
/// unsupported helmVersion, say): those hold whichever Job exists.
fn chart_failure(hc: &Value) -> Option<String> {
    let c = condition(hc, "Failed")?;
    if c["reason"].as_str() == Some(JOB_FAILED_REASON) {
        return None;
    }
    Some(format!(
        "helm-controller reports the install failed: {}",
        c["message"]
            .as_str()
            .or(c["reason"].as_str())
            .unwrap_or("no message")
    ))
}

/// The install job for the current HelmChart spec completed.
///
/// `job_uid_before` is the install job's uid from before sightline changed
/// the HelmChart's spec (None when there was no job, or the spec did not
/// change): a job with that uid belongs to the old spec and does not count.
/// The Job's identity is decided first: helm-controller keeps a HelmChart's
/// `Failed` condition until it has replaced the failed Job, and a HelmChart
/// has no `observedGeneration` to tell a stale condition from a new one.
pub fn install_job(
    helmchart: Option<&Value>,
    job: Option<&Value>,
    pods: &[Value],
    job_uid_before: Option<&str>,
) -> Gate {
    let Some(hc) = helmchart else {
        return Gate::Pending("waiting for the HelmChart object".into());
    };
    let Some(job) = job else {
        return match chart_failure(hc) {
            Some(why) => Gate::Failed(why),
            None => Gate::Pending("waiting for helm-controller to create the install job".into()),
        };
    };
    let job_name = job["metadata"]["name"].as_str().unwrap_or("?");
    if job_uid_before.is_some() && job["metadata"]["uid"].as_str() == job_uid_before {
        let stale = if condition(hc, "Failed").is_some() {
            " (the HelmChart's Failed condition is about that old job)"
        } else {
            ""
        };
        return Gate::Pending(format!(
            "waiting for helm-controller to replace install job {job_name} for the new spec{stale}"
        ));
    }
    let owner_ok = job["metadata"]["ownerReferences"]
        .as_array()
        .is_none_or(|o| o.is_empty() || o.iter().any(|r| r["uid"] == hc["metadata"]["uid"]));
    if !owner_ok {
        return Gate::Pending("the install job belongs to an earlier HelmChart".into());
    }
    if condition(job, "Complete").is_some() {
        return Gate::Ok;
    }
    if let Some(c) = condition(job, "Failed") {
        let why = pod_problems(pods);
        return Gate::Failed(format!(
            "install job {job_name} failed ({}: {}){}",
            c["reason"].as_str().unwrap_or("Failed"),
            c["message"].as_str().unwrap_or(""),
            if why.is_empty() {
                String::new()
            } else {
                format!("; {}", why.join("; "))
            }
        ));
    }
    if let Some(why) = chart_failure(hc) {
        return Gate::Failed(why);
    }
    let why = pod_problems(pods);
    Gate::Pending(if why.is_empty() {
        format!("install job {job_name} is running")
    } else {
        format!("install job {job_name}: {}", why.join("; "))
    })
}

/// Why pods are not running: waiting reasons such as ImagePullBackOff, and
/// the last termination of a crashing container.
pub fn pod_problems(pods: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pods {
        let name = p["metadata"]["name"].as_str().unwrap_or("?");
        for key in ["initContainerStatuses", "containerStatuses"] {
            for cs in p["status"][key]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let cname = cs["name"].as_str().unwrap_or("?");
                if let Some(w) = cs["state"]["waiting"].as_object()
                    && let Some(reason) = w.get("reason").and_then(Value::as_str)
                    && reason != "ContainerCreating"
                    && reason != "PodInitializing"
                {
                    let msg = w.get("message").and_then(Value::as_str).unwrap_or("");
                    out.push(format!(
                        "pod {name} container {cname}: {reason}{}",
                        if msg.is_empty() {
                            String::new()
                        } else {
                            format!(" ({msg})")
                        }
                    ));
                } else if let Some(t) = cs["state"]["terminated"].as_object()
                    && t.get("exitCode").and_then(Value::as_i64).unwrap_or(0) != 0
                {
                    out.push(format!(
                        "pod {name} container {cname}: terminated {} (exit {})",
                        t.get("reason").and_then(Value::as_str).unwrap_or("Error"),
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ));
                }
            }
        }
        if let Some(c) = p["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter().find(|c| {
                c["type"].as_str() == Some("PodScheduled") && c["status"].as_str() == Some("False")
            })
        }) {
            out.push(format!(
                "pod {name} unschedulable: {}",
                c["message"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// One workload is ready: the controller saw the current generation and
/// every replica is updated and ready (or available).
pub fn workload(kind: &str, obj: Option<&Value>) -> Gate {
    let Some(o) = obj else {
        return Gate::Pending("not created yet".into());
    };
    let i = |v: &Value| v.as_i64().unwrap_or(0);
    let generation = i(&o["metadata"]["generation"]);
    let observed = i(&o["status"]["observedGeneration"]);
    if observed < generation {
        return Gate::Pending(format!(
            "controller has not seen generation {generation} yet"
        ));
    }
    let s = &o["status"];
    match kind {
        "deployment" => {
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let (updated, available) = (i(&s["updatedReplicas"]), i(&s["availableReplicas"]));
            if updated >= want && available >= want && i(&s["replicas"]) <= want {
                Gate::Ok
            } else {
                Gate::Pending(format!(
                    "{available}/{want} available, {updated}/{want} updated"
                ))
            }
        }
        "statefulset" => {
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let (ready, updated) = (i(&s["readyReplicas"]), i(&s["updatedReplicas"]));
            let revision_ok =
                s["updateRevision"].is_null() || s["currentRevision"] == s["updateRevision"];
            if ready >= want && updated >= want && revision_ok {
                Gate::Ok
            } else {
                Gate::Pending(format!("{ready}/{want} ready, {updated}/{want} updated"))
            }
        }
        "daemonset" => {
            let want = i(&s["desiredNumberScheduled"]);
            let (ready, updated) = (i(&s["numberReady"]), i(&s["updatedNumberScheduled"]));
            if ready >= want && updated >= want && i(&s["numberUnavailable"]) == 0 {
                Gate::Ok
            } else {
                Gate::Pending(format!("{ready}/{want} ready, {updated}/{want} updated"))
            }
        }
        other => Gate::Failed(format!("unknown workload kind {other}")),
    }
}
