//! Which values key sizes which container of each pinned chart.
//!
//! A HelmChart in a stage file carries values, not pods; helm-controller
//! renders the templates in the cluster. The footprint (`footprint.rs`)
//! therefore needs, per chart, the workloads its templates create, their
//! replica count and the values path of each container's resources. Each
//! entry names the template it was read from, at the pinned version
//! (`files/bundle/index.toml`). A container whose resources are not set in
//! the values is an error, not a zero: the chart defaults of most of these
//! charts set no resources at all.

use serde_yaml_ng::Value;

use super::footprint::get;

/// A condition on the values.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Always rendered.
    Always,
    /// Rendered when the boolean at the path is true (or unset and the default is true).
    Enabled(&'static str, bool),
    /// Rendered when the path holds a non-empty mapping or list.
    NonEmpty(&'static str),
    /// Rendered when the path holds this string.
    Equals(&'static str, &'static str),
}

impl When {
    /// Evaluates the condition against merged values.
    pub fn holds(self, v: &Value) -> bool {
        match self {
            When::Always => true,
            When::Enabled(p, default) => get(v, p).and_then(Value::as_bool).unwrap_or(default),
            When::NonEmpty(p) => match get(v, p) {
                Some(Value::Mapping(m)) => !m.is_empty(),
                Some(Value::Sequence(s)) => !s.is_empty(),
                _ => false,
            },
            When::Equals(p, want) => get(v, p).and_then(Value::as_str) == Some(want),
        }
    }
}

/// How many copies of a workload run on one node.
#[derive(Debug, Clone, Copy)]
pub enum Copies {
    /// A DaemonSet.
    PerNode,
    /// Exactly one (the chart has no replicas setting, or sightline's
    /// one-node layout fixes it).
    One,
    /// The number at this values path, or the default.
    Path(&'static str, u64),
}

/// One container.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// Container name (for the report).
    pub container: &'static str,
    /// Values path of its ResourceRequirements.
    pub resources: &'static str,
    /// When the template renders it.
    pub when: When,
}

/// One workload of a chart.
#[derive(Debug, Clone)]
pub struct Workload {
    /// kind/name, for the report.
    pub name: &'static str,
    /// When the chart renders it.
    pub when: When,
    /// Copies per node.
    pub copies: Copies,
    /// A Job (scan jobs, hooks): counted apart from the steady state.
    pub job: bool,
    /// Its containers.
    pub containers: Vec<Part>,
    /// Its init containers.
    pub init: Vec<Part>,
}

const fn part(container: &'static str, resources: &'static str) -> Part {
    Part {
        container,
        resources,
        when: When::Always,
    }
}

fn steady(name: &'static str, when: When, copies: Copies, containers: Vec<Part>) -> Workload {
    Workload {
        name,
        when,
        copies,
        job: false,
        containers,
        init: vec![],
    }
}

// grafana-community/helm-charts charts/grafana templates/_pod.tpl: the
// dashboards sidecar (grafana-sc-dashboard) and the datasources sidecar
// (grafana-sc-datasources) are containers sized by sidecar.resources; the
// download-dashboards init container runs when `dashboards` is non-empty and
// is sized by downloadDashboards.resources.
const GRAFANA_CONTAINERS: [Part; 3] = [
    part("grafana", "grafana.resources"),
    Part {
        container: "grafana-sc-dashboard",
        resources: "grafana.sidecar.resources",
        when: When::Enabled("grafana.sidecar.dashboards.enabled", false),
    },
    Part {
        container: "grafana-sc-datasources",
        resources: "grafana.sidecar.resources",
        when: When::Enabled("grafana.sidecar.datasources.enabled", false),
    },
];
const GRAFANA_INIT: [Part; 1] = [Part {
    container: "download-dashboards",
    resources: "grafana.downloadDashboards.resources",
    when: When::NonEmpty("grafana.dashboards"),
}];
fn grafana() -> Workload {
    Workload {
        name: "deployment/grafana",
        when: When::Enabled("grafana.enabled", true),
        copies: Copies::Path("grafana.replicas", 1),
        job: false,
        containers: GRAFANA_CONTAINERS.to_vec(),
        init: GRAFANA_INIT.to_vec(),
    }
}

/// The pod model of a chart (by its `[charts]` key), or None if unknown.
pub fn model(chart: &str) -> Option<Vec<Workload>> {
    Some(match chart {
        // grafana-community/helm-charts charts/loki templates/single-binary/statefulset.yaml
        // (container loki: singleBinary.resources; replicas singleBinary.replicas).
        // The rules sidecar is off (sidecar.rules.enabled: false), gateway,
        // caches and canary are disabled in values/loki.yaml.
        "loki" => vec![steady(
            "statefulset/loki",
            When::Always,
            Copies::Path("singleBinary.replicas", 1),
            vec![part("loki", "singleBinary.resources")],
        )],
        // fluent/helm-charts charts/fluent-bit templates/_pod.tpl: one container, `resources`.
        "fluent-bit" => vec![steady(
            "daemonset/fluent-bit",
            When::Always,
            Copies::PerNode,
            vec![part("fluent-bit", "resources")],
        )],
        // grafana/alloy operations/helm/charts/alloy templates/containers/_agent.yaml
        // (alloy.resources) and _watch.yaml (configReloader.resources).
        "alloy" => vec![steady(
            "daemonset/alloy",
            When::Always,
            Copies::PerNode,
            vec![
                part("alloy", "alloy.resources"),
                Part {
                    container: "config-reloader",
                    resources: "configReloader.resources",
                    when: When::Enabled("configReloader.enabled", true),
                },
            ],
        )],
        // VictoriaMetrics/helm-charts charts/victoria-metrics-k8s-stack: the
        // VMSingle/VMAgent/VMAlert/VMAlertmanager objects carry spec.resources
        // and spec.configReloaderResources, which the operator copies into
        // the pods it creates; the subcharts size their own pods.
        "victoria-metrics-k8s-stack" => vec![
            steady(
                "deployment/vmks-operator",
                When::Enabled("victoria-metrics-operator.enabled", true),
                Copies::Path("victoria-metrics-operator.replicaCount", 1),
                vec![part("operator", "victoria-metrics-operator.resources")],
            ),
            steady(
                "deployment/vmsingle-vmks",
                When::Enabled("vmsingle.enabled", true),
                Copies::One,
                vec![part("vmsingle", "vmsingle.spec.resources")],
            ),
            steady(
                "deployment/vmagent-vmks",
                When::Enabled("vmagent.enabled", true),
                Copies::Path("vmagent.spec.replicaCount", 1),
                vec![
                    part("vmagent", "vmagent.spec.resources"),
                    part("config-reloader", "vmagent.spec.configReloaderResources"),
                ],
            ),
            steady(
                "deployment/vmalert-vmks",
                When::Enabled("vmalert.enabled", true),
                Copies::Path("vmalert.spec.replicaCount", 1),
                vec![
                    part("vmalert", "vmalert.spec.resources"),
                    part("config-reloader", "vmalert.spec.configReloaderResources"),
                ],
            ),
            steady(
                "statefulset/vmalertmanager-vmks",
                When::Enabled("alertmanager.enabled", true),
                Copies::Path("alertmanager.spec.replicaCount", 1),
                vec![
                    part("alertmanager", "alertmanager.spec.resources"),
                    part(
                        "config-reloader",
                        "alertmanager.spec.configReloaderResources",
                    ),
                ],
            ),
            grafana(),
            steady(
                "daemonset/node-exporter",
                When::Enabled("prometheus-node-exporter.enabled", true),
                Copies::PerNode,
                vec![part("node-exporter", "prometheus-node-exporter.resources")],
            ),
            steady(
                "deployment/kube-state-metrics",
                When::Enabled("kube-state-metrics.enabled", true),
                Copies::Path("kube-state-metrics.replicas", 1),
                vec![part("kube-state-metrics", "kube-state-metrics.resources")],
            ),
        ],
        // prometheus-community/helm-charts charts/kube-prometheus-stack:
        // templates/prometheus-operator/deployment.yaml (prometheusOperator.resources),
        // the Prometheus and Alertmanager CRs (…Spec.resources; the operator adds
        // a config-reloader sized by prometheusOperator.prometheusConfigReloader.resources),
        // templates/prometheus-operator/admission-webhooks/job-patch (Jobs).
        "kube-prometheus-stack" => vec![
            steady(
                "deployment/kps-operator",
                When::Enabled("prometheusOperator.enabled", true),
                Copies::One,
                vec![part("operator", "prometheusOperator.resources")],
            ),
            Workload {
                name: "job/kps-admission-patch",
                when: When::Enabled("prometheusOperator.admissionWebhooks.enabled", true),
                copies: Copies::One,
                job: true,
                containers: vec![part(
                    "patch",
                    "prometheusOperator.admissionWebhooks.patch.resources",
                )],
                init: vec![],
            },
            steady(
                "statefulset/prometheus",
                When::Enabled("prometheus.enabled", true),
                Copies::Path("prometheus.prometheusSpec.replicas", 1),
                vec![
                    part("prometheus", "prometheus.prometheusSpec.resources"),
                    part(
                        "config-reloader",
                        "prometheusOperator.prometheusConfigReloader.resources",
                    ),
                ],
            ),
            steady(
                "statefulset/alertmanager",
                When::Enabled("alertmanager.enabled", true),
                Copies::Path("alertmanager.alertmanagerSpec.replicas", 1),
                vec![
                    part("alertmanager", "alertmanager.alertmanagerSpec.resources"),
                    part(
                        "config-reloader",
                        "prometheusOperator.prometheusConfigReloader.resources",
                    ),
                ],
            ),
            grafana(),
            steady(
                "daemonset/node-exporter",
                When::Enabled("nodeExporter.enabled", true),
                Copies::PerNode,
                vec![part("node-exporter", "prometheus-node-exporter.resources")],
            ),
            steady(
                "deployment/kube-state-metrics",
                When::Enabled("kubeStateMetrics.enabled", true),
                Copies::Path("kube-state-metrics.replicas", 1),
                vec![part("kube-state-metrics", "kube-state-metrics.resources")],
            ),
        ],
        // falcosecurity/charts charts/falco templates/pod-template.tpl: the
        // falco container (resources), the falcoctl-artifact-follow sidecar,
        // the falcoctl-artifact-install init container, and the driver
        // loader init container, which is rendered for the kmod driver only.
        "falco" => vec![Workload {
            name: "daemonset/falco",
            when: When::Always,
            copies: Copies::PerNode,
            job: false,
            containers: vec![
                part("falco", "resources"),
                Part {
                    container: "falcoctl-artifact-follow",
                    resources: "falcoctl.artifact.follow.resources",
                    when: When::Enabled("falcoctl.artifact.follow.enabled", true),
                },
            ],
            init: vec![
                Part {
                    container: "falcoctl-artifact-install",
                    resources: "falcoctl.artifact.install.resources",
                    when: When::Enabled("falcoctl.artifact.install.enabled", true),
                },
                Part {
                    container: "falco-driver-loader",
                    resources: "driver.loader.initContainer.resources",
                    when: When::Equals("driver.kind", "kmod"),
                },
            ],
        }],
        // aquasecurity/trivy-operator deploy/helm templates/deployment.yaml
        // (resources); the operator starts at most
        // operator.scanJobsConcurrentLimit scan Jobs sized by trivy.resources
        // (pkg/plugins/trivy config "trivy.resources.*").
        "trivy-operator" => vec![
            steady(
                "deployment/trivy-operator",
                When::Always,
                Copies::Path("operator.replicas", 1),
                vec![part("trivy-operator", "resources")],
            ),
            Workload {
                name: "job/scan-vulnerabilityreport",
                when: When::Always,
                copies: Copies::Path("operator.scanJobsConcurrentLimit", 10),
                job: true,
                containers: vec![part("trivy", "trivy.resources")],
                init: vec![],
            },
        ],
        // cilium/tetragon install/kubernetes/tetragon templates/daemonset.yaml
        // (tetragon.resources; export-stdout sidecar export.resources) and
        // operator_deployment.yaml (tetragonOperator.resources).
        "tetragon" => vec![
            steady(
                "daemonset/tetragon",
                When::Always,
                Copies::PerNode,
                vec![
                    part("tetragon", "tetragon.resources"),
                    part("export-stdout", "export.resources"),
                ],
            ),
            steady(
                "deployment/tetragon-operator",
                When::Enabled("tetragonOperator.enabled", true),
                Copies::One,
                vec![part("tetragon-operator", "tetragonOperator.resources")],
            ),
        ],
        // kubescape/helm-charts charts/kubescape-operator templates/{kubescape,
        // operator,storage,node-agent,kubescape-scheduler}.
        "kubescape-operator" => vec![
            steady(
                "deployment/kubescape",
                When::Always,
                Copies::One,
                vec![part("kubescape", "kubescape.resources")],
            ),
            steady(
                "deployment/operator",
                When::Always,
                Copies::One,
                vec![part("operator", "operator.resources")],
            ),
            steady(
                "deployment/storage",
                When::Always,
                Copies::One,
                vec![part("storage", "storage.resources")],
            ),
            steady(
                "daemonset/node-agent",
                When::Always,
                Copies::PerNode,
                vec![part("node-agent", "nodeAgent.resources")],
            ),
            Workload {
                name: "cronjob/kubescape-scheduler",
                when: When::Always,
                copies: Copies::One,
                job: true,
                containers: vec![part("kubescape-scheduler", "kubescapeScheduler.resources")],
                init: vec![],
            },
        ],
        // NVIDIA/dcgm-exporter deployment templates/daemonset.yaml (resources).
        "dcgm-exporter" => vec![steady(
            "daemonset/dcgm-exporter",
            When::Always,
            Copies::PerNode,
            vec![part("dcgm-exporter", "resources")],
        )],
        // CRDs only.
        "prometheus-operator-crds" => vec![],
        _ => return None,
    })
}
