//! The memory a rendered stack asks of one node, computed from the rendered
//! stage files themselves.
//!
//! Plain manifests carry their pod specs, so their containers are read
//! directly. A HelmChart carries only values: which values key sizes which
//! container of which workload is a fact of each pinned chart's templates, so
//! [`super::chart_pods`] records it per chart, with the template it comes from.
//!
//! Counting rules: a DaemonSet once per node (the footprint is per node), a
//! Deployment or StatefulSet times its replicas; init containers and Jobs are
//! counted apart from the steady state, because they do not all run at once:
//! init containers one after another, scan Jobs up to their concurrency limit.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_yaml_ng::Value;

use super::chart_pods::{self, Copies, Part};
use super::render::RenderedStage;
use crate::decide::Tier;

/// When a container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Runs as long as its pod.
    Steady,
    /// An init container: runs before its pod's containers, one at a time.
    Init,
    /// A Job or CronJob container: runs now and then.
    Job,
}

/// One container and its share of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The stage that installs it.
    pub stage: String,
    /// Workload (kind/name) and container.
    pub container: String,
    /// When it runs.
    pub phase: Phase,
    /// How many copies run on one node.
    pub copies: u64,
    /// Memory request of one copy, bytes.
    pub request_bytes: u64,
    /// Memory limit of one copy, bytes.
    pub limit_bytes: u64,
}

/// The footprint of a set of rendered stages on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Every container counted.
    pub lines: Vec<Line>,
}

impl Footprint {
    fn sum(&self, phase: Phase, f: impl Fn(&Line) -> u64) -> u64 {
        self.lines
            .iter()
            .filter(|l| l.phase == phase)
            .map(|l| f(l) * l.copies)
            .sum()
    }

    /// Memory requests of everything that runs steadily.
    pub fn steady_requests(&self) -> u64 {
        self.sum(Phase::Steady, |l| l.request_bytes)
    }

    /// Memory limits of everything that runs steadily.
    pub fn steady_limits(&self) -> u64 {
        self.sum(Phase::Steady, |l| l.limit_bytes)
    }

    /// Requests of all Jobs that may run at the same time.
    pub fn job_requests(&self) -> u64 {
        self.sum(Phase::Job, |l| l.request_bytes)
    }

    /// The largest single init container request: init containers run one
    /// at a time, and pods start one after another stage by stage.
    pub fn init_peak_request(&self) -> u64 {
        self.lines
            .iter()
            .filter(|l| l.phase == Phase::Init)
            .map(|l| l.request_bytes)
            .max()
            .unwrap_or(0)
    }

    /// Steady requests plus the larger of the Jobs and the init peak: what
    /// the scheduler must find free at the worst moment.
    pub fn peak_requests(&self) -> u64 {
        self.steady_requests() + self.job_requests().max(self.init_peak_request())
    }
}

/// Computes the footprint of rendered stages.
pub fn of_stages(stages: &[RenderedStage]) -> Result<Footprint> {
    let mut fp = Footprint::default();
    for s in stages {
        let text = std::str::from_utf8(&s.content).context("stage file is not UTF-8")?;
        for (i, d) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let doc: Value = serde::Deserialize::deserialize(d)
                .with_context(|| format!("{}: document {i}", s.file_name))?;
            let lines = match doc["kind"].as_str() {
                Some("HelmChart") => {
                    helm_lines(&doc).with_context(|| format!("{}: HelmChart", s.file_name))?
                }
                Some(_) => manifest_lines(&doc)
                    .with_context(|| format!("{}: document {i}", s.file_name))?,
                None => Vec::new(),
            };
            fp.lines.extend(lines.into_iter().map(|mut l| {
                l.stage = s.stage.name.clone();
                l
            }));
        }
    }
    Ok(fp)
}

fn manifest_lines(doc: &Value) -> Result<Vec<Line>> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let (spec, copies, job) = match kind {
        "DaemonSet" => (&doc["spec"]["template"]["spec"], 1, false),
        "Deployment" | "StatefulSet" => (
            &doc["spec"]["template"]["spec"],
            // The API default for an unset replicas is 1.
            doc["spec"]["replicas"].as_u64().unwrap_or(1),
            false,
        ),
        "Job" => (&doc["spec"]["template"]["spec"], 1, true),
        "CronJob" => (
            &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            1,
            true,
        ),
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for (key, phase) in [
        ("containers", Phase::Steady),
        ("initContainers", Phase::Init),
    ] {
        for c in spec[key]
            .as_sequence()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let cname = c["name"].as_str().unwrap_or_default();
            let (request_bytes, limit_bytes) = memory(&c["resources"])
                .with_context(|| format!("{kind} {name} container {cname}"))?;
            out.push(Line {
                stage: String::new(),
                container: format!("{}/{name}/{cname}", kind.to_ascii_lowercase()),
                phase: if job { Phase::Job } else { phase },
                copies,
                request_bytes,
                limit_bytes,
            });
        }
    }
    Ok(out)
}

fn helm_lines(doc: &Value) -> Result<Vec<Line>> {
    let chart = doc["metadata"]["name"].as_str().unwrap_or_default();
    let mut values: Value =
        serde_yaml_ng::from_str(doc["spec"]["valuesContent"].as_str().unwrap_or_default())
            .context("valuesContent")?;
    // helm-controller passes spec.set as --set, over valuesContent.
    if let Some(set) = doc["spec"]["set"].as_mapping() {
        for (k, v) in set {
            set_path(&mut values, k.as_str().unwrap_or_default(), v.clone());
        }
    }
    let Some(model) = chart_pods::model(chart) else {
        bail!("no pod model for chart {chart}: add it to src/bundle/chart_pods.rs");
    };
    let mut out = Vec::new();
    for w in model {
        if !w.when.holds(&values) {
            continue;
        }
        let copies = match w.copies {
            Copies::PerNode | Copies::One => 1,
            Copies::Path(p, default) => get(&values, p).and_then(Value::as_u64).unwrap_or(default),
        };
        let parts: [(&[Part], Phase); 2] = [
            (
                &w.containers,
                if w.job { Phase::Job } else { Phase::Steady },
            ),
            (&w.init, Phase::Init),
        ];
        for (list, phase) in parts {
            for p in list {
                if !p.when.holds(&values) {
                    continue;
                }
                let res = get(&values, p.resources).with_context(|| {
                    format!(
                        "{chart}: values set no {} (container {} of {}): the footprint cannot count it",
                        p.resources, p.container, w.name
                    )
                })?;
                let (request_bytes, limit_bytes) =
                    memory(res).with_context(|| format!("{chart}: {}", p.resources))?;
                out.push(Line {
                    stage: String::new(),
                    container: format!("{}/{}", w.name, p.container),
                    phase,
                    copies,
                    request_bytes,
                    limit_bytes,
                });
            }
        }
    }
    Ok(out)
}

/// Memory request and limit of a ResourceRequirements; both must be set.
fn memory(res: &Value) -> Result<(u64, u64)> {
    let q = |k: &str| -> Result<u64> {
        let v = &res[k]["memory"];
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => bail!("no {k}.memory"),
        };
        parse_quantity(&s)
    };
    Ok((q("requests")?, q("limits")?))
}

/// A dotted values path (no quoting: the model's paths have no dotted keys).
pub(crate) fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |cur, k| cur.as_mapping()?.get(k))
        .filter(|v| !v.is_null())
}

fn set_path(v: &mut Value, path: &str, new: Value) {
    let mut cur = v;
    for k in path.split('.') {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Default::default());
        }
        let m = cur.as_mapping_mut().expect("mapping");
        cur = m.entry(Value::String(k.to_string())).or_insert(Value::Null);
    }
    *cur = new;
}

/// Parses a Kubernetes memory quantity (`128Mi`, `1.5Gi`, `500M`, `1e9`).
pub fn parse_quantity(s: &str) -> Result<u64> {
    let s = s.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, mult) = suffixes
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((s, 1.0));
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a memory quantity"))?;
    if !(n.is_finite() && n >= 0.0) {
        bail!("{s:?} is not a memory quantity");
    }
    Ok((n * mult).ceil() as u64)
}

/// Formats bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// The footprint of a tier's stack on this machine, from the bundle's own
/// values (a user's values overlay is not read: this is what `detect` shows
/// before anything is written).
pub fn for_tier(
    bundle: &super::Bundle,
    cfg: &crate::config::LoadedConfig,
    facts: &crate::facts::Facts,
    tier: Tier,
) -> Result<Footprint> {
    // Only the generated Secrets read these; they hold no workload.
    let secrets = super::secrets::Secrets {
        grafana_admin_password: String::new(),
        uptime_kuma_admin_password: String::new(),
        smtp_password: None,
        discord_webhook_url: None,
        ntfy_token: None,
    };
    let inputs = super::StageInputs {
        cfg: &cfg.config,
        facts,
        tier,
        runtime_security: crate::decide::decide_runtime_security(cfg, facts, tier).value,
        secrets: &secrets,
        airgap_charts: None,
        network_policies: crate::decide::decide_network_policies(cfg, facts).value,
        user_values: BTreeMap::new(),
    };
    of_stages(&super::render::render_tier(bundle, &inputs)?)
}

/// What `detect` shows about the stack: each tier's footprint, whether this
/// machine's tier fits, and the dashboards decision.
#[derive(Debug, Clone, Serialize)]
pub struct StackReport {
    /// Per tier: steady requests, steady limits, Jobs, init peak (bytes).
    pub tiers: BTreeMap<Tier, TierFigures>,
    /// Whether the decided tier fits this node.
    pub fit: crate::decide::Decision<super::fit::Fit>,
    /// Whether the grafana.com extra dashboards are installed.
    pub extra_dashboards: crate::decide::Decision<bool>,
}

/// A tier's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierFigures {
    /// Steady memory requests.
    pub steady_requests_bytes: u64,
    /// Steady memory limits.
    pub steady_limits_bytes: u64,
    /// Jobs that may run at once.
    pub job_requests_bytes: u64,
    /// Largest init container.
    pub init_peak_bytes: u64,
}

impl From<&Footprint> for TierFigures {
    fn from(f: &Footprint) -> Self {
        TierFigures {
            steady_requests_bytes: f.steady_requests(),
            steady_limits_bytes: f.steady_limits(),
            job_requests_bytes: f.job_requests(),
            init_peak_bytes: f.init_peak_request(),
        }
    }
}

/// The report as `detect` prints it.
pub fn render_report(r: &Result<StackReport>) -> String {
    let r = match r {
        Ok(r) => r,
        Err(e) => return format!("stack\n  footprint unavailable: {e:#}\n"),
    };
    let mut s = String::from("stack (memory per node, from the rendered bundle)\n");
    for (t, f) in &r.tiers {
        s.push_str(&format!(
            "  {:<6} requests {} steady (limits {}), + {} for Jobs, {} largest init container\n",
            t.as_str(),
            mib(f.steady_requests_bytes),
            mib(f.steady_limits_bytes),
            mib(f.job_requests_bytes),
            mib(f.init_peak_bytes)
        ));
    }
    let fit = match &r.fit.value {
        super::fit::Fit::Fits => "fits".to_string(),
        super::fit::Fit::Reduced { omitted } => {
            format!("reduced: without {}", omitted.join(", "))
        }
        super::fit::Fit::Refused => "refused".to_string(),
    };
    s.push_str(&format!("  fit    {fit}\n"));
    for reason in &r.fit.reasons {
        s.push_str(&format!("           - {reason}\n"));
    }
    s.push_str(&format!(
        "  extra dashboards {}\n",
        if r.extra_dashboards.value {
            "yes"
        } else {
            "no"
        }
    ));
    for reason in &r.extra_dashboards.reasons {
        s.push_str(&format!("           - {reason}\n"));
    }
    s
}

/// Builds the report for `detect`.
pub fn report(
    root: &crate::sysroot::Sysroot,
    cfg: &crate::config::LoadedConfig,
    facts: &crate::facts::Facts,
    tier: Tier,
) -> Result<StackReport> {
    let bundle = super::Bundle::load(root, &cfg.config)?;
    let mut tiers = BTreeMap::new();
    let mut own = Footprint::default();
    for t in [Tier::Full, Tier::Light] {
        let fp = for_tier(&bundle, cfg, facts, t)?;
        tiers.insert(t, TierFigures::from(&fp));
        if t == tier {
            own = fp;
        }
    }
    Ok(StackReport {
        tiers,
        fit: super::fit::decide_fit(facts.memory.total_bytes, tier, &own),
        extra_dashboards: super::dashboards::decide_extra_dashboards(&cfg.config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("128Mi").unwrap(), 128 << 20);
        assert_eq!(parse_quantity("1.5Gi").unwrap(), 1536 << 20);
        assert_eq!(parse_quantity("500M").unwrap(), 500_000_000);
        assert_eq!(parse_quantity("1024").unwrap(), 1024);
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("-1Mi").is_err());
    }

    #[test]
    fn daemonsets_once_deployments_by_replicas_inits_and_jobs_apart() {
        let doc: Value = serde_yaml_ng::from_str(
            "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 3\n  template:\n    spec:\n      initContainers: [{name: i, resources: {requests: {memory: 64Mi}, limits: {memory: 64Mi}}}]\n      containers: [{name: c, resources: {requests: {memory: 10Mi}, limits: {memory: 20Mi}}}]\n",
        )
        .unwrap();
        let fp = Footprint {
            lines: manifest_lines(&doc).unwrap(),
        };
        assert_eq!(fp.steady_requests(), 30 << 20);
        assert_eq!(fp.steady_limits(), 60 << 20);
        assert_eq!(fp.init_peak_request(), 64 << 20);
        let cron: Value = serde_yaml_ng::from_str(
            "kind: CronJob\nmetadata: {name: j}\nspec: {jobTemplate: {spec: {template: {spec: {containers: [{name: c, resources: {requests: {memory: 5Mi}, limits: {memory: 5Mi}}}]}}}}}\n",
        )
        .unwrap();
        let fp = Footprint {
            lines: manifest_lines(&cron).unwrap(),
        };
        assert_eq!((fp.steady_requests(), fp.job_requests()), (0, 5 << 20));
        let bare: Value = serde_yaml_ng::from_str(
            "kind: DaemonSet\nmetadata: {name: x}\nspec: {template: {spec: {containers: [{name: c}]}}}\n",
        )
        .unwrap();
        assert!(
            manifest_lines(&bare).is_err(),
            "a container without memory is an error"
        );
    }
}
