//! The Grafana dashboards sightline ships: in both tiers' render, valid
//! against Grafana's dashboard schema (@grafana/schema), with unique stable
//! uids and data sources that both tiers provision; the grafana.com extras
//! only where the node may download.

mod common;
mod stack;

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml_ng::Value;

/// The dashboards of the bundle, by uid. A uid is how links and bookmarks
/// find a dashboard: changing one breaks them, so this list pins them.
const UIDS: [&str; 4] = [
    "sightline-agent",
    "sightline-cluster",
    "sightline-raspberry-pi",
    "sightline-security",
];

/// The uid of the Falco chart's own dashboard (falcosecurity/charts
/// charts/falco/dashboards/falco-dashboard.json at chart 9.1.0), which the
/// falco stage installs through grafana.dashboards.enabled.
const FALCO_CHART_UID: &str = "ddwe2ug4nfi0wb";

fn uids(r: &stack::Render) -> Vec<String> {
    stack::dashboards(r)
        .iter()
        .map(|d| d.json["uid"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn both_tiers_ship_every_dashboard_once_with_its_stable_uid() {
    for r in stack::renders() {
        let mut got = uids(&r);
        got.sort();
        assert_eq!(got, UIDS, "{}", r.label);
        assert!(!UIDS.contains(&FALCO_CHART_UID));
    }
}

/// Every datasource reference in a dashboard model.
fn datasource_refs(v: &Json, out: &mut Vec<Json>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                if k == "datasource" && x.is_object() {
                    out.push(x.clone());
                }
                datasource_refs(x, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|x| datasource_refs(x, out)),
        _ => {}
    }
}

/// Datasource uids a tier provisions, from its metrics stack's values.
fn provisioned(r: &stack::Render) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut add = |list: &Value| {
        for d in list.as_sequence().into_iter().flatten() {
            out.insert((
                d["type"].as_str().unwrap().to_string(),
                d["uid"].as_str().unwrap().to_string(),
            ));
        }
    };
    if let Some(v) = r.helm_values("kube-prometheus-stack") {
        // The chart's default Prometheus datasource (type prometheus) with the uid set here.
        let ds = &v["grafana"]["sidecar"]["datasources"];
        assert_eq!(ds["defaultDatasourceEnabled"].as_bool(), Some(true));
        add(&serde_yaml_ng::from_str(&format!(
            "[{{type: prometheus, uid: {}}}]",
            ds["uid"].as_str().unwrap()
        ))
        .unwrap());
        add(&v["grafana"]["additionalDataSources"]);
    }
    if let Some(v) = r.helm_values("victoria-metrics-k8s-stack") {
        add(&v["defaultDatasources"]["victoriametrics"]["datasources"]);
        add(&v["defaultDatasources"]["extra"]);
    }
    out
}

#[test]
fn every_datasource_reference_exists_on_both_tiers() {
    for r in stack::renders() {
        let have = provisioned(&r);
        assert!(!have.is_empty(), "{}", r.label);
        for d in stack::dashboards(&r) {
            let variables: BTreeSet<String> = d.json["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["type"] == "datasource")
                .map(|v| format!("${{{}}}", v["name"].as_str().unwrap()))
                .collect();
            let mut refs = Vec::new();
            datasource_refs(&d.json, &mut refs);
            for ds in refs {
                let (t, uid) = (
                    ds["type"].as_str().unwrap_or_default(),
                    ds["uid"].as_str().unwrap_or_default(),
                );
                let ok = have.contains(&(t.to_string(), uid.to_string()))
                    || variables.contains(uid)
                    || (t == "grafana" && uid == "-- Grafana --");
                assert!(
                    ok,
                    "{}: {}: datasource {ds} is not provisioned ({have:?})",
                    r.label, d.origin
                );
            }
        }
    }
}

#[test]
fn every_dashboard_validates_against_grafanas_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for r in stack::renders() {
        for (i, d) in stack::dashboards(&r).into_iter().enumerate() {
            let p = dir
                .path()
                .join(format!("{}-{i}.json", r.label.split(' ').next().unwrap()));
            std::fs::write(&p, serde_json::to_string_pretty(&d.json).unwrap()).unwrap();
            paths.push(p);
        }
    }
    let args: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let (okay, log) = stack::try_node("dashboards.mjs", &args, b"");
    assert!(okay, "{log}");
    // The checker itself refuses a wrong type, an unknown panel field and a
    // missing required field.
    for (json, want) in [
        (r#"{"title": "x"}"#, "schemaVersion"),
        (
            r#"{"schemaVersion": 39, "panels": [{"type": "stat", "gridPos": {"h": "4", "w": 4, "x": 0, "y": 0}}]}"#,
            "'string' is not assignable to type 'number'",
        ),
        (
            r#"{"schemaVersion": 39, "panels": [{"type": "stat", "colour": 1}]}"#,
            "colour",
        ),
    ] {
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, json).unwrap();
        let (okay, log) = stack::try_node("dashboards.mjs", &[bad.as_path()], b"");
        assert!(!okay && log.contains(want), "{want}: {log}");
    }
}

fn grafana_values(r: &stack::Render) -> Value {
    let v = r
        .helm_values("kube-prometheus-stack")
        .or_else(|| r.helm_values("victoria-metrics-k8s-stack"))
        .unwrap();
    v["grafana"].clone()
}

fn gnet_ids(g: &Value) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for (_, provider) in g["dashboards"].as_mapping().into_iter().flatten() {
        for (_, d) in provider.as_mapping().unwrap() {
            out.insert(d["gnetId"].as_u64().unwrap());
        }
    }
    out
}

#[test]
fn grafana_com_extras_only_where_the_node_may_download() {
    // Default, online: only the two optional extras; 19972 and 17319 are
    // replaced by sightline's cluster dashboard and the Falco chart's own.
    for (fx, _) in [("pi4", ()), ("ubuntu-cilium", ())] {
        let r = stack::render(fx, "", &[]);
        assert_eq!(
            gnet_ids(&grafana_values(&r)),
            BTreeSet::from([1860, 16450]),
            "{fx}"
        );
    }
    let r = stack::render("pi4", "", &[]);
    let falco = r.helm_values("falco").unwrap();
    assert_eq!(falco["grafana"]["dashboards"]["enabled"], Value::Bool(true));

    // Switched off, and air-gapped even when switched on: nothing to download.
    let off = stack::render("pi4", "[grafana]\nextra_dashboards = \"off\"\n", &[]);
    let root = common::fixture("pi4");
    common::write(
        root.path(),
        "/etc/sightline/config.toml",
        "[grafana]\nextra_dashboards = \"on\"\n[bundle]\nairgap_charts_dir = \"/srv/charts\"\n",
    );
    stack::write_airgap_charts(root.path(), "/srv/charts");
    let airgap = stack::render_root(root.path(), "pi4 air-gapped");
    for r in [&off, &airgap] {
        let g = grafana_values(r);
        assert!(
            g["dashboards"].is_null() && g["dashboardProviders"].is_null(),
            "{}: {g:?}",
            r.label
        );
    }
    let d = common::detect(root.path());
    assert_eq!(d["stack"]["extra_dashboards"]["value"], false, "{d}");
    assert!(
        d["stack"]["extra_dashboards"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("nothing is downloaded"),
        "{d}"
    );
}
