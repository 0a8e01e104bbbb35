//! Which Grafana dashboards a render ships.
//!
//! sightline's own dashboards are ConfigMaps in `manifests/` (label
//! `grafana_dashboard: "1"`) and need nothing from outside. The two
//! grafana.com dashboards left as optional extras (1860 Node Exporter Full,
//! 16450 K3s cluster) sit in the metrics stacks' values under
//! `grafana.dashboards`; Grafana's download-dashboards init container fetches
//! them from grafana.com at every pod start. On an air-gapped node that fetch
//! cannot succeed, so there the extras are always taken out of the values:
//! with `grafana.dashboards` empty the chart renders no download container
//! (grafana chart templates/_pod.tpl, `if .Values.dashboards`).

use serde_yaml_ng::Value;

use crate::config::{Config, ExtraDashboardsChoice};
use crate::decide::Decision;

/// Charts whose values carry the grafana.com extras.
pub const CHARTS_WITH_EXTRAS: [&str; 2] = ["kube-prometheus-stack", "victoria-metrics-k8s-stack"];

/// Whether the grafana.com extras are installed.
pub fn decide_extra_dashboards(cfg: &Config) -> Decision<bool> {
    let airgap = cfg.bundle.airgap_charts_dir.as_deref();
    match (cfg.grafana.extra_dashboards, airgap) {
        (ExtraDashboardsChoice::Off, _) => Decision {
            value: false,
            reasons: vec!["grafana.extra_dashboards = \"off\": only sightline's own dashboards".into()],
            overridden: true,
        },
        (choice, Some(dir)) => Decision {
            value: false,
            reasons: vec![format!(
                "air-gapped (bundle.airgap_charts_dir = {dir:?}): grafana.com dashboards 1860 and 16450 are left out, nothing is downloaded at runtime{}",
                if choice == ExtraDashboardsChoice::On {
                    "; grafana.extra_dashboards = \"on\" is ignored here"
                } else {
                    ""
                }
            )],
            overridden: choice == ExtraDashboardsChoice::On,
        },
        (choice, None) => Decision {
            value: true,
            reasons: vec![
                "grafana.com dashboards 1860 (Node Exporter Full) and 16450 (K3s cluster) are downloaded by Grafana at start; set grafana.extra_dashboards = \"off\" to ship only sightline's own".into(),
            ],
            overridden: choice == ExtraDashboardsChoice::On,
        },
    }
}

/// Takes the grafana.com dashboards (and their file provider) out of a
/// metrics stack's values.
pub fn strip_extras(values: &mut Value) {
    if let Some(g) = values.get_mut("grafana").and_then(Value::as_mapping_mut) {
        g.remove("dashboards");
        g.remove("dashboardProviders");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn airgap_never_downloads() {
        let mut cfg = Config::default();
        assert!(decide_extra_dashboards(&cfg).value);
        cfg.grafana.extra_dashboards = ExtraDashboardsChoice::On;
        cfg.bundle.airgap_charts_dir = Some("/srv/charts".into());
        let d = decide_extra_dashboards(&cfg);
        assert!(!d.value, "on is ignored when air-gapped");
        assert!(d.reasons[0].contains("ignored"));
        cfg.bundle.airgap_charts_dir = None;
        cfg.grafana.extra_dashboards = ExtraDashboardsChoice::Off;
        assert!(!decide_extra_dashboards(&cfg).value);
    }

    #[test]
    fn strip_leaves_the_rest() {
        let mut v: Value = serde_yaml_ng::from_str(
            "grafana:\n  dashboards: {a: {b: {gnetId: 1}}}\n  dashboardProviders: {x: 1}\n  resources: {}\n",
        )
        .unwrap();
        strip_extras(&mut v);
        let want: Value = serde_yaml_ng::from_str("grafana:\n  resources: {}\n").unwrap();
        assert_eq!(v, want);
    }
}
