//! Rendering stage files exactly as the rollout places them.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::dashboards::{CHARTS_WITH_EXTRAS, decide_extra_dashboards, strip_extras};
use super::fit::Fit;
use super::index::{Index, Stage, WorkloadRef, parse_workload};
use super::secrets::Secrets;
use super::{Bundle, generated, values};
use crate::config::Config;
use crate::decide::{RuntimeSecurity, Tier};
use crate::facts::Facts;
use crate::k3s::helmchart::FailurePolicy;

/// Everything a render depends on.
#[derive(Debug, Clone)]
pub struct StageInputs<'a> {
    /// Configuration.
    pub cfg: &'a Config,
    /// Machine facts.
    pub facts: &'a Facts,
    /// The tier to render.
    pub tier: Tier,
    /// The runtime-security engine.
    pub runtime_security: RuntimeSecurity,
    /// Credentials for the generated Secrets.
    pub secrets: &'a Secrets,
    /// Air-gapped chart archives available (file names), when airgap is configured.
    pub airgap_charts: Option<Vec<String>>,
    /// Install the static NetworkPolicies.
    pub network_policies: bool,
    /// The user's values overlays by release name (YAML text).
    pub user_values: BTreeMap<String, String>,
}

/// One stage file.
#[derive(Debug, Clone)]
pub struct RenderedStage {
    /// The index entry.
    pub stage: Stage,
    /// File name in the manifests directory.
    pub file_name: String,
    /// Exact content.
    pub content: Vec<u8>,
    /// Holds Secret data: written 0600, never diffed or logged.
    pub sensitive: bool,
    /// The HelmChart (kube-system) this stage installs, if any.
    pub helmchart: Option<String>,
    /// Workloads that must be ready.
    pub workloads: Vec<WorkloadRef>,
}

/// True when a stage belongs on this machine.
pub fn applies(stage: &Stage, inputs: &StageInputs<'_>) -> bool {
    stage.tiers.contains(&inputs.tier)
        && stage.requires.iter().all(|r| match r.as_str() {
            "tetragon" => inputs.runtime_security == RuntimeSecurity::Tetragon,
            "falco" => matches!(inputs.runtime_security, RuntimeSecurity::Falco(_)),
            "gpu" => inputs.facts.gpu.is_some(),
            "netpol" => inputs.network_policies,
            _ => false,
        })
}

/// The chart archive name helm-controller would download.
pub fn chart_archive(chart: &str, version: &str) -> String {
    format!("{chart}-{version}.tgz")
}

/// Renders every stage that applies, in install order, and checks that the
/// result fits this node's memory (`bundle::fit`): stages the node cannot
/// hold are left out, or the render is refused with the numbers.
pub fn render_stages(bundle: &Bundle, inputs: &StageInputs<'_>) -> Result<Vec<RenderedStage>> {
    let all = render_tier(bundle, inputs)?;
    let fp = super::footprint::of_stages(&all)?;
    let fit = super::fit::decide_fit(inputs.facts.memory.total_bytes, inputs.tier, &fp);
    match fit.value {
        Fit::Fits => Ok(all),
        Fit::Reduced { omitted } => {
            tracing::warn!(omitted = ?omitted, reason = %fit.reasons.join("; "), "stack reduced to fit memory");
            Ok(all
                .into_iter()
                .filter(|s| !omitted.contains(&s.stage.name))
                .collect())
        }
        Fit::Refused => Err(StackRefused(format!(
            "{} ({})",
            fit.reasons[1].trim_start_matches("warning: "),
            fit.reasons[0]
        ))
        .into()),
    }
}

/// The node cannot hold the stack, even reduced: no cluster stage is
/// written. The text gives the numbers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StackRefused(pub String);

/// Renders every stage of the tier that applies, whatever the node's memory.
pub fn render_tier(bundle: &Bundle, inputs: &StageInputs<'_>) -> Result<Vec<RenderedStage>> {
    let index = bundle.index()?;
    let mut out = Vec::new();
    for stage in &index.stages {
        if applies(stage, inputs) {
            out.push(render_stage(bundle, &index, stage, inputs)?);
        }
    }
    Ok(out)
}

fn render_stage(
    bundle: &Bundle,
    index: &Index,
    stage: &Stage,
    inputs: &StageInputs<'_>,
) -> Result<RenderedStage> {
    let mut text = format!(
        "# Managed by sightline: stage {} ({} tier), bundle {}.\n# k3s applies this file; sightline rewrites it. Configure /etc/sightline/config.toml instead.\n",
        stage.name,
        inputs.tier,
        &bundle.digest[..12]
    );
    let mut docs: Vec<String> = Vec::new();
    for m in &stage.manifests {
        let body = bundle.text(m)?;
        // Each document must parse; a broken static file is a bundle bug,
        // caught here rather than by k3s's deploy controller.
        for (i, d) in serde_yaml_ng::Deserializer::from_str(body).enumerate() {
            let _: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(d).with_context(|| format!("{m}: document {i}"))?;
        }
        docs.push(format!("# from {m}\n{}", body.trim_end()));
    }
    for g in &stage.generated {
        let v = match super::uptime_kuma::generate(g, bundle, inputs) {
            Some(v) => v?,
            None => generated::generate(g, inputs.cfg, inputs.secrets, inputs.tier)?,
        };
        docs.push(serde_json::to_string_pretty(&v)?);
    }
    let mut helmchart = None;
    if let Some(h) = &stage.helm {
        let v = helm_chart(bundle, index, stage, inputs)?;
        helmchart = Some(h.chart.clone());
        docs.push(serde_json::to_string_pretty(&v)?);
    }
    for (i, d) in docs.iter().enumerate() {
        if i > 0 || !text.is_empty() {
            text.push_str("---\n");
        }
        text.push_str(d);
        text.push('\n');
    }
    let workloads = stage
        .workloads
        .iter()
        .map(|w| parse_workload(w))
        .collect::<Result<Vec<_>>>()?;
    Ok(RenderedStage {
        file_name: stage.file_name(),
        stage: stage.clone(),
        content: text.into_bytes(),
        sensitive: stage.generated.iter().any(|g| {
            matches!(
                g.as_str(),
                "grafana-admin"
                    | "alertmanager-config"
                    | "alertmanager-files"
                    | "uptime-kuma-admin"
                    | "uptime-kuma-monitors"
            )
        }),
        helmchart,
        workloads,
    })
}

/// Charts whose release holds state (Loki's logs, the metrics stacks' TSDB,
/// Grafana, Alertmanager silences). klipper-helm's default failure policy
/// answers a release left failed by an upgrade with `helm uninstall` and a
/// fresh install, which deletes what the release owns; `abort` stops for an
/// operator instead and the install job fails, so the gate reports it.
/// (Uptime Kuma is a plain manifest stage, not a HelmChart.)
const ABORT_ON_FAILED_RELEASE: [&str; 3] = [
    "loki",
    "kube-prometheus-stack",
    "victoria-metrics-k8s-stack",
];

/// Values set on the HelmChart from facts and config, rather than templated.
pub fn machine_values(chart: &str, inputs: &StageInputs<'_>) -> BTreeMap<String, Value> {
    let mut set = BTreeMap::new();
    match chart {
        "loki" => {
            set.insert(
                "loki.limits_config.retention_period".into(),
                json!(format!("{}h", inputs.cfg.loki.retention_days * 24)),
            );
        }
        "falco" => {
            if let Some(d) = inputs.runtime_security.falco_driver() {
                set.insert("driver.kind".into(), json!(d.chart_value()));
            }
        }
        _ => {}
    }
    set
}

fn helm_chart(
    bundle: &Bundle,
    index: &Index,
    stage: &Stage,
    inputs: &StageInputs<'_>,
) -> Result<Value> {
    let h = stage.helm.as_ref().expect("helm stage");
    let chart = &index.charts[&h.chart];
    let values = values::merged(
        bundle,
        &h.chart,
        inputs.tier,
        inputs.user_values.get(&h.chart).map(String::as_str),
    )
    .with_context(|| format!("values for {}", h.chart))?;
    let values = if CHARTS_WITH_EXTRAS.contains(&h.chart.as_str())
        && !decide_extra_dashboards(inputs.cfg).value
    {
        let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&values)?;
        strip_extras(&mut v);
        serde_yaml_ng::to_string(&v)?
    } else {
        values
    };
    let mut spec = json!({
        "targetNamespace": h.namespace,
        "createNamespace": true,
        "valuesContent": values,
        // helm-controller's default of 1000 retries hides a broken install
        // for hours; fail fast so the gate can say why.
        "backOffLimit": 3,
        "timeout": h.timeout,
    });
    match &inputs.airgap_charts {
        Some(available) => {
            let archive = chart_archive(&chart.chart, &chart.version);
            if !available.contains(&archive) {
                bail!(
                    "air-gapped install: {archive} is missing from {} (stage {})",
                    inputs
                        .cfg
                        .bundle
                        .airgap_charts_dir
                        .as_deref()
                        .unwrap_or("the airgap directory"),
                    stage.name
                );
            }
            spec["chart"] = json!(format!(
                "https://%{{KUBERNETES_API}}%/static/charts/{archive}"
            ));
        }
        None => {
            spec["chart"] = json!(chart.chart);
            spec["repo"] = json!(chart.repo);
            spec["version"] = json!(chart.version);
        }
    }
    if ABORT_ON_FAILED_RELEASE.contains(&h.chart.as_str()) {
        spec["failurePolicy"] = json!(FailurePolicy::Abort);
    }
    let set = machine_values(&h.chart, inputs);
    if !set.is_empty() {
        spec["set"] = json!(set);
    }
    Ok(json!({
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {
            "name": h.chart,
            "namespace": "kube-system",
            "labels": { "app.kubernetes.io/managed-by": "sightline", "sightline.dev/stage": stage.name }
        },
        "spec": spec
    }))
}
