//! Shared by tests/queries.rs and tests/dashboards.rs: rendered stages, the
//! queries and dashboards they ship, and the node validators in
//! scripts/validate/.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value as Json;
use serde_yaml_ng::Value;

use crate::common::*;

/// Rendered stage files of one machine: (file name, documents).
pub struct Render {
    /// What was rendered (fixture and arguments), for messages.
    pub label: String,
    /// Stage files and their documents.
    pub files: Vec<(String, Vec<Value>)>,
}

impl Render {
    /// Every document, with the stage file it is in.
    pub fn docs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.files
            .iter()
            .flat_map(|(f, ds)| ds.iter().map(move |d| (f.as_str(), d)))
    }

    /// The values of the HelmChart `name`, if rendered.
    pub fn helm_values(&self, name: &str) -> Option<Value> {
        self.docs()
            .find(|(_, d)| {
                d["kind"].as_str() == Some("HelmChart")
                    && d["metadata"]["name"].as_str() == Some(name)
            })
            .map(|(_, d)| {
                serde_yaml_ng::from_str(d["spec"]["valuesContent"].as_str().unwrap()).unwrap()
            })
    }
}

/// Renders a fixture with `sightline render`.
pub fn render(fixture_name: &str, config: &str, args: &[&str]) -> Render {
    let root = fixture(fixture_name);
    if !config.is_empty() {
        write(root.path(), "/etc/sightline/config.toml", config);
    }
    render_args(root.path(), &format!("{fixture_name} {args:?}"), args)
}

/// Renders a prepared root.
pub fn render_root(root: &Path, label: &str) -> Render {
    render_args(root, label, &[])
}

fn render_args(root: &Path, label: &str, args: &[&str]) -> Render {
    let out = tempfile::tempdir().unwrap();
    let mut a = vec!["render", "--out", out.path().to_str().unwrap()];
    a.extend_from_slice(args);
    ok(root, &a);
    let mut files = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        files.push((p.file_name().unwrap().to_string_lossy().into_owned(), docs));
    }
    Render {
        label: label.to_string(),
        files,
    }
}

/// The renders the shipped content is checked on: both tiers, both
/// runtime-security engines.
pub fn renders() -> Vec<Render> {
    vec![
        render("pi4", "", &[]),
        render("ubuntu-cilium", "", &[]),
        render("flatcar", "", &[]),
    ]
}

/// Places a stand-in archive for every pinned chart in `dir` (host path), as
/// an air-gapped node has them.
pub fn write_airgap_charts(root: &Path, dir: &str) {
    let idx: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("files/bundle/index.toml")).unwrap())
            .unwrap();
    for (_, c) in idx["charts"].as_table().unwrap() {
        write(
            root,
            &format!(
                "{dir}/{}-{}.tgz",
                c["chart"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            ),
            "tgz",
        );
    }
}

/// A query language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// PromQL (Prometheus and VictoriaMetrics).
    PromQl,
    /// LogQL (Loki).
    LogQl,
}

/// One shipped query and where it comes from.
#[derive(Debug, Clone)]
pub struct Query {
    /// Stage file, object and rule / panel, for messages.
    pub origin: String,
    /// Language.
    pub lang: Lang,
    /// The expression.
    pub expr: String,
}

/// A Grafana dashboard shipped in a ConfigMap.
pub struct Dashboard {
    /// Stage file and ConfigMap key.
    pub origin: String,
    /// The model.
    pub json: Json,
}

/// Dashboards in ConfigMaps labelled grafana_dashboard: "1".
pub fn dashboards(r: &Render) -> Vec<Dashboard> {
    let mut out = Vec::new();
    for (file, d) in r.docs() {
        if d["kind"].as_str() == Some("ConfigMap")
            && d["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        {
            for (k, v) in d["data"].as_mapping().unwrap() {
                let key = k.as_str().unwrap();
                let json: Json = serde_json::from_str(v.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{file}: {key}: {e}"));
                out.push(Dashboard {
                    origin: format!(
                        "{file}: ConfigMap {} {key}",
                        d["metadata"]["name"].as_str().unwrap()
                    ),
                    json,
                });
            }
        }
    }
    out
}

fn rule_queries(
    origin: &str,
    groups: &Value,
    lang: Lang,
    out: &mut Vec<Query>,
    records: &mut Vec<String>,
) {
    for g in groups.as_sequence().unwrap() {
        for rule in g["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            if let Some(rec) = rule["record"].as_str() {
                records.push(rec.to_string());
            }
            out.push(Query {
                origin: format!("{origin} rule {name}"),
                lang,
                expr: rule["expr"].as_str().unwrap().to_string(),
            });
        }
    }
}

fn panel_queries(origin: &str, panels: &Json, inherited: Option<&Json>, out: &mut Vec<Query>) {
    for p in panels.as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or_default();
        let ds = if p["datasource"].is_object() {
            Some(&p["datasource"])
        } else {
            inherited
        };
        for t in p["targets"].as_array().into_iter().flatten() {
            let tds = if t["datasource"].is_object() {
                Some(&t["datasource"])
            } else {
                ds
            };
            if let Some(expr) = t["expr"].as_str() {
                out.push(Query {
                    origin: format!("{origin} panel {title:?} {}", t["refId"]),
                    lang: lang_of(tds, origin),
                    expr: expr.to_string(),
                });
            }
        }
        panel_queries(origin, &p["panels"], ds, out);
    }
}

fn lang_of(ds: Option<&Json>, origin: &str) -> Lang {
    match ds.and_then(|d| d["type"].as_str()) {
        Some("prometheus") => Lang::PromQl,
        Some("loki") => Lang::LogQl,
        other => panic!("{origin}: a query whose data source type is {other:?}"),
    }
}

/// Every query a render ships, and the recording rules it defines.
pub fn queries(r: &Render) -> (Vec<Query>, Vec<String>) {
    let mut out = Vec::new();
    let mut records = Vec::new();
    for (file, d) in r.docs() {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        match d["kind"].as_str() {
            Some("PrometheusRule") => rule_queries(
                &format!("{file}: PrometheusRule {name}"),
                &d["spec"]["groups"],
                Lang::PromQl,
                &mut out,
                &mut records,
            ),
            Some("ConfigMap") if name == "sightline-loki-rules" => {
                for (k, v) in d["data"].as_mapping().unwrap() {
                    let rules: Value = serde_yaml_ng::from_str(v.as_str().unwrap()).unwrap();
                    rule_queries(
                        &format!("{file}: ConfigMap {name} {}", k.as_str().unwrap()),
                        &rules["groups"],
                        Lang::LogQl,
                        &mut out,
                        &mut records,
                    );
                }
            }
            _ => {}
        }
    }
    for dash in dashboards(r) {
        panel_queries(&dash.origin, &dash.json["panels"], None, &mut out);
        for v in dash.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if v["type"].as_str() != Some("query") {
                continue;
            }
            let q = v["query"]
                .as_str()
                .or(v["query"]["query"].as_str())
                .unwrap_or_default();
            out.push(Query {
                origin: format!("{} variable {}", dash.origin, v["name"]),
                lang: lang_of(Some(&v["datasource"]), &dash.origin),
                expr: q.to_string(),
            });
        }
    }
    (out, records)
}

/// What the upstream parser says about one query.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Error nodes (empty when the query parses).
    pub errors: Vec<Json>,
    /// Metric names of its vector selectors (PromQL).
    pub metrics: Vec<String>,
    /// Its stream selectors: (label, operator, value) (LogQL).
    pub selectors: Vec<Vec<(String, String, String)>>,
}

/// Parses queries with scripts/validate/queries.mjs (upstream Lezer grammars).
pub fn parse(queries: &[(Lang, String)]) -> Vec<Parsed> {
    assert!(
        repo()
            .join("scripts/validate/node_modules/@grafana/lezer-logql")
            .is_dir(),
        "run scripts/test-deps (npm ci in scripts/validate)"
    );
    let input: Vec<Json> = queries
        .iter()
        .enumerate()
        .map(|(i, (lang, expr))| {
            serde_json::json!({
                "id": i.to_string(),
                "lang": match lang { Lang::PromQl => "promql", Lang::LogQl => "logql" },
                "expr": expr,
            })
        })
        .collect();
    let out = run_node("queries.mjs", &[], &serde_json::to_vec(&input).unwrap());
    let v: Json = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| Parsed {
            errors: r["errors"].as_array().unwrap().clone(),
            metrics: r["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect(),
            selectors: r["selectors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|m| {
                            (
                                m["name"].as_str().unwrap().to_string(),
                                m["op"].as_str().unwrap().to_string(),
                                m["value"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect()
                })
                .collect(),
        })
        .collect()
}

/// Runs a node script from scripts/validate with stdin; returns stdout, panics on failure.
pub fn run_node(script: &str, args: &[&Path], stdin: &[u8]) -> String {
    let (okay, out) = try_node(script, args, stdin);
    assert!(okay, "node {script} failed:\n{out}");
    out
}

/// Runs a node script; returns (success, stdout + stderr).
pub fn try_node(script: &str, args: &[&Path], stdin: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("node")
        .arg(repo().join("scripts/validate").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (installed by scripts/test-deps)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
