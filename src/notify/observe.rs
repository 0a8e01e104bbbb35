//! Gathering one observation: k3s's unit over D-Bus and `/readyz`, the
//! Watchdog alert through the API's service proxy, the stages from the
//! status file, the last rollback from the state, and the throttle word.

use serde::Deserialize;

use super::k3s::{K3sHealth, classify};
use super::monitor::{FailedStage, Observation, PipelineHealth, PowerSeen, Rollback, StartFacts};
use crate::config::Config;
use crate::k3s::{ApiError, K3sApi};
use crate::state::StageState;
use crate::sysroot::Sysroot;
use crate::systemd::SystemdClient;

/// Where each tier's Alertmanager answers, as a Service in `monitoring`.
/// Full: kube-prometheus-stack with `fullnameOverride: kps` names it
/// `kps-alertmanager`, port 9093 (files/bundle/values/kube-prometheus-stack.yaml;
/// chart templates/alertmanager/service.yaml). Light: the VictoriaMetrics
/// operator names a VMAlertmanager's Service `vmalertmanager-<name>`, port
/// 9093, and the chart names it `vmks` (files/bundle/values/loki.light.yaml
/// uses the same address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertmanagerService {
    /// Namespace.
    pub namespace: &'static str,
    /// Service name.
    pub name: &'static str,
    /// Port.
    pub port: u16,
    /// Whether the tier's rules include the always-firing `Watchdog` alert.
    pub has_watchdog_rule: bool,
    /// What evaluates the rules and sends alerts to it.
    pub evaluator: &'static str,
}

/// The full tier's Alertmanager. kube-prometheus-stack's default rules
/// (group `general.rules`, kept on in files/bundle/values) fire `Watchdog`.
pub const FULL_ALERTMANAGER: AlertmanagerService = AlertmanagerService {
    namespace: "monitoring",
    name: "kps-alertmanager",
    port: 9093,
    has_watchdog_rule: true,
    evaluator: "Prometheus",
};

/// The light tier's VMAlertmanager. Its chart's default rules are off
/// (files/bundle/values/victoria-metrics-k8s-stack.yaml), so sightline ships
/// the `Watchdog` rule itself (stage `watchdog-alert`,
/// files/bundle/manifests/watchdog-alert.yaml).
pub const LIGHT_ALERTMANAGER: AlertmanagerService = AlertmanagerService {
    namespace: "monitoring",
    name: "vmalertmanager-vmks",
    port: 9093,
    has_watchdog_rule: true,
    evaluator: "vmalert",
};

impl AlertmanagerService {
    /// For a tier name from the status file.
    pub fn for_tier(tier: &str) -> Option<AlertmanagerService> {
        match tier {
            "full" => Some(FULL_ALERTMANAGER),
            "light" => Some(LIGHT_ALERTMANAGER),
            _ => None,
        }
    }

    /// Alertmanager's API v2 `GET /alerts`, filtered to the Watchdog alert,
    /// through the API server's service proxy
    /// (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH`, kubernetes
    /// pkg/registry/core/service/storage: a numeric port selects the
    /// service port with that number). No port is opened on the node.
    pub fn watchdog_alerts_path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/services/{}:{}/proxy/api/v2/alerts?filter=alertname%3D%22Watchdog%22",
            self.namespace, self.name, self.port
        )
    }
}

/// What the application layer knows about the cluster rollout (from its
/// status): the tier and each stage's state. Passed in, so this module does
/// not reach up into the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// `full` or `light`, once decided.
    pub tier: Option<String>,
    /// Stages: name, state (`healthy`, `failed`, `skipped`, ...), detail.
    pub stages: Vec<StageView>,
}

/// One stage as the status file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageView {
    /// Stage name.
    pub name: String,
    /// Where it stands.
    pub state: StageState,
    /// Why, for failed or waiting.
    pub detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Alert {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// Reads the Watchdog alert through the API (k3s must be ready).
pub async fn pipeline(api: &K3sApi, cluster: Option<&ClusterView>) -> PipelineHealth {
    let Some(st) = cluster else {
        return PipelineHealth::NotApplicable("no rollout status yet".into());
    };
    if st.stages.is_empty() {
        return PipelineHealth::NotApplicable("no stack is rolled out".into());
    }
    if let Some(s) = st.stages.iter().find(|s| {
        matches!(
            s.state,
            StageState::Pending | StageState::Applying | StageState::Waiting | StageState::Pruning
        )
    }) {
        return PipelineHealth::NotApplicable(format!(
            "the stack is still rolling out (stage {} is {})",
            s.name,
            s.state.name()
        ));
    }
    let Some(am) = st.tier.as_deref().and_then(AlertmanagerService::for_tier) else {
        return PipelineHealth::NotApplicable("the tier is not known yet".into());
    };
    if !am.has_watchdog_rule {
        return PipelineHealth::NotApplicable(
            "this tier ships no always-firing Watchdog rule".into(),
        );
    }
    match api.get_json::<Vec<Alert>>(&am.watchdog_alerts_path()).await {
        Ok(alerts)
            if alerts
                .iter()
                .any(|a| a.labels.get("alertname").map(String::as_str) == Some("Watchdog")) =>
        {
            PipelineHealth::Seen
        }
        Ok(_) => PipelineHealth::Missing(format!(
            "{}/{} lists no Watchdog alert, so {} is not sending alerts to it",
            am.namespace, am.name, am.evaluator
        )),
        Err(ApiError::Unreachable { detail, .. }) => {
            PipelineHealth::NotApplicable(format!("the k3s API does not answer: {detail}"))
        }
        Err(e) => PipelineHealth::Missing(format!(
            "{}/{} does not answer through the API proxy ({e})",
            am.namespace, am.name
        )),
    }
}

/// Failed stages.
pub fn failed_stages(cluster: Option<&ClusterView>) -> Option<Vec<FailedStage>> {
    Some(
        cluster?
            .stages
            .iter()
            .filter(|s| s.state == StageState::Failed)
            .map(|s| FailedStage {
                name: s.name.clone(),
                detail: s.detail.clone().unwrap_or_else(|| "failed".into()),
            })
            .collect(),
    )
}

/// The last rollback recorded in the state.
pub fn rollback(root: &Sysroot, cfg: &Config) -> Option<Rollback> {
    let state = crate::state::State::load(root, cfg).ok()?;
    let r = state.k3s.rejected?;
    Some(Rollback {
        key: format!("{}/{}", r.at, r.digest),
        at: parse_rfc3339(&r.at).unwrap_or(0),
        reason: r.reason,
        kept_in: r.kept_in,
    })
}

/// Throttle conditions latched since boot, from the collector's sample.
pub fn power(root: &Sysroot) -> Option<PowerSeen> {
    let source = crate::facts::Facts::detect_throttle_source(root);
    if source == crate::facts::ThrottleSource::None {
        return None;
    }
    let boot_id = super::marker::boot_id(root)?;
    let sample = crate::throttle::collect(root, &source).ok()?;
    let occurred = crate::throttle::CONDITIONS
        .iter()
        .filter(|c| sample.throttled.occurred(c))
        .map(|c| c.help.to_string())
        .collect();
    Some(PowerSeen { boot_id, occurred })
}

/// The facts read once when the daemon starts. Reading clears the
/// clean-stop marker.
pub fn start_facts(root: &Sysroot, cfg: &Config) -> anyhow::Result<Option<StartFacts>> {
    let Some(boot_id) = super::marker::boot_id(root) else {
        return Ok(None);
    };
    let clean_stop_boot = super::marker::take_clean_stop(root, cfg)?;
    let under_voltage =
        power(root).is_some_and(|p| p.occurred.iter().any(|c| c.starts_with("under-voltage")));
    Ok(Some(StartFacts {
        boot_id,
        booted_at: super::marker::booted_at(root).unwrap_or(0),
        clean_stop_boot,
        watchdog_reset: super::marker::watchdog_reset(root),
        under_voltage,
    }))
}

/// One full observation. D-Bus and API failures leave their part unknown.
pub async fn observe(
    root: &Sysroot,
    cfg: &Config,
    systemd: Option<&SystemdClient>,
    api: Option<&K3sApi>,
    cluster: Option<&ClusterView>,
) -> Observation {
    let k3s = match systemd {
        Some(sd) => match sd.unit_health(&cfg.k3s.unit).await {
            Ok(unit) => {
                let ready = match (&unit.active_state, api) {
                    (crate::systemd::ActiveState::Active, Some(api)) => api.readyz().await,
                    (_, None) => Err("no k3s client certificate yet".into()),
                    _ => Ok(()),
                };
                Some(classify(&unit, || ready))
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the k3s unit over D-Bus");
                None
            }
        },
        None => None,
    };
    let pipeline = match (&k3s, api) {
        (Some(K3sHealth::Ready), Some(api)) => Some(pipeline(api, cluster).await),
        (Some(_), _) => Some(PipelineHealth::NotApplicable("k3s is not ready".into())),
        (None, _) => None,
    };
    Observation {
        k3s,
        pipeline,
        failed_stages: failed_stages(cluster),
        rollback: rollback(root, cfg),
        power: power(root),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (as sightline writes it) to seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for secs in [0u64, 951_782_400, 1_780_000_123, 4_102_444_800] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&crate::clock::rfc3339(t)), Some(secs));
        }
    }

    /// Each tier's flag follows what its bundle ships: when a bundle change
    /// drops a tier's heartbeat, this fails so that the check is switched
    /// off rather than reporting a dead pipeline forever.
    #[test]
    fn watchdog_rule_flags_match_the_bundle() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(repo.join(p)).unwrap();
        let index: toml::Table = toml::from_str(&read("files/bundle/index.toml")).unwrap();
        let light_has_rule = index["stage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["tiers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t.as_str() == Some("light"))
            })
            .flat_map(|s| s.get("manifests").and_then(|m| m.as_array()).cloned())
            .flatten()
            .any(|m| {
                let text = read(&format!("files/bundle/{}", m.as_str().unwrap()));
                serde_yaml_ng::Deserializer::from_str(&text).any(|d| {
                    let d: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
                    d["spec"]["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|g| {
                            g["rules"].as_array().into_iter().flatten().any(|r| {
                                r["alert"] == "Watchdog"
                                    && r["expr"].as_str().map(str::trim) == Some("vector(1)")
                            })
                        })
                })
            });
        let vm = read("files/bundle/values/victoria-metrics-k8s-stack.yaml");
        let light_has = light_has_rule || !vm.contains("defaultRules:\n  enabled: false");
        assert_eq!(LIGHT_ALERTMANAGER.has_watchdog_rule, light_has);
        let kps = read("files/bundle/values/kube-prometheus-stack.yaml");
        assert!(kps.contains("fullnameOverride: kps"));
        let full_has =
            kps.contains("defaultRules:\n  create: true") && !kps.contains("general: false");
        assert_eq!(FULL_ALERTMANAGER.has_watchdog_rule, full_has);
    }
}
