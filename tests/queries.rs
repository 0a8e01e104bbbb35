//! Every query sightline ships - alert rules, Loki rules, dashboard panels and
//! variables - parsed by the upstream PromQL and LogQL grammars, every metric
//! name accounted for, and every LogQL stream selector checked against the
//! labels the log collectors really set.

mod common;
mod stack;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use stack::{Lang, Query};

fn all_queries() -> Vec<(String, Query, Vec<String>)> {
    let mut out = Vec::new();
    for r in stack::renders() {
        let (qs, records) = stack::queries(&r);
        assert!(!qs.is_empty(), "{}: no queries found", r.label);
        for q in qs {
            out.push((r.label.clone(), q, records.clone()));
        }
    }
    out
}

#[test]
fn every_shipped_query_parses_with_the_upstream_grammars() {
    let qs = all_queries();
    let parsed = stack::parse(
        &qs.iter()
            .map(|(_, q, _)| (q.lang, q.expr.clone()))
            .collect::<Vec<_>>(),
    );
    let mut failures = Vec::new();
    let (mut promql, mut logql) = (0, 0);
    for ((render, q, _), p) in qs.iter().zip(&parsed) {
        match q.lang {
            Lang::PromQl => promql += 1,
            Lang::LogQl => logql += 1,
        }
        if !p.errors.is_empty() {
            failures.push(format!(
                "{render}: {}: {:?}\n  {}",
                q.origin, p.errors, q.expr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Alert rules, Loki rules and the four dashboards are all covered.
    assert!(promql > 60 && logql > 8, "{promql} PromQL, {logql} LogQL");
}

/// The dead man's switch needs an always-firing `Watchdog` on both tiers:
/// on the light tier sightline ships it (and the grammar above parses it),
/// on the full tier kube-prometheus-stack's default rules fire it, so
/// sightline's own rules must not add a second one there.
#[test]
fn only_the_light_tier_ships_the_watchdog_rule_and_it_parses() {
    for r in stack::renders() {
        let (qs, _) = stack::queries(&r);
        let watchdog: Vec<&Query> = qs
            .iter()
            .filter(|q| q.origin.ends_with(" rule Watchdog"))
            .collect();
        let light = r.label.starts_with("pi4");
        if light {
            assert_eq!(watchdog.len(), 1, "{}: {watchdog:?}", r.label);
            let q = watchdog[0];
            assert!(
                q.origin.contains("sightline-90-watchdog-alert.yaml"),
                "{}",
                q.origin
            );
            assert_eq!(q.expr.trim(), "vector(1)");
            let parsed = stack::parse(&[(Lang::PromQl, q.expr.clone())]);
            assert!(parsed[0].errors.is_empty(), "{:?}", parsed[0]);
            assert!(parsed[0].metrics.is_empty(), "vector(1) reads no series");
        } else {
            assert!(watchdog.is_empty(), "{}: {watchdog:?}", r.label);
        }
    }
}

#[test]
fn the_parsers_reject_what_they_should() {
    let parsed = stack::parse(&[
        (Lang::PromQl, "sum(rate(up[5m])".into()),
        (Lang::PromQl, "up{job=~}".into()),
        (Lang::LogQl, "{job=\"x\"} | json |".into()),
        (Lang::LogQl, "count_over_time({job=\"x\"})".into()),
        (
            Lang::PromQl,
            "rate(node_cpu_seconds_total[$__rate_interval])".into(),
        ),
    ]);
    for p in &parsed[..4] {
        assert!(!p.errors.is_empty(), "{p:?}");
    }
    assert!(
        parsed[4].errors.is_empty(),
        "Grafana's interval variables are interpolated"
    );
    assert_eq!(parsed[4].metrics, ["node_cpu_seconds_total"]);
}

/// Metric names sightline itself exports: its node_exporter textfile metrics.
fn sightline_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // The Raspberry Pi collector, through its own renderer.
    let sample = sightline::throttle::Sample {
        throttled: sightline::throttle::Throttled::parse("throttled=0x0").unwrap(),
        soc_temp_celsius: Some(50.0),
        core_volts: Some(0.9),
    };
    for line in sightline::throttle::render(&sample).lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split(' ').next().unwrap().to_string());
        }
    }
    // The agent's own metrics: every "sightline_*" name literal in src/.
    let mut stack = vec![repo().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for chunk in text.split('"').skip(1).step_by(2) {
                    if chunk.starts_with("sightline_")
                        && chunk.len() > 10
                        && chunk
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        names.insert(chunk.to_string());
                    }
                }
            }
        }
    }
    assert!(names.contains("sightline_stage_healthy") && names.contains("rpi_throttled_now"));
    names
}

fn exporter_series() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("tests/data/exporter-series.tsv")).unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(
            cols.len() == 3 && !cols[2].trim().is_empty(),
            "tests/data/exporter-series.tsv: {line:?} needs metric, exporter and source"
        );
        assert!(
            out.insert(cols[0].to_string(), cols[1].to_string())
                .is_none(),
            "{line}: listed twice"
        );
    }
    out
}

fn unknown_metrics(qs: &[(String, Query, Vec<String>)], parsed: &[stack::Parsed]) -> Vec<String> {
    let own = sightline_metrics();
    let listed = exporter_series();
    let mut bad = Vec::new();
    for ((render, q, records), p) in qs.iter().zip(parsed) {
        for m in &p.metrics {
            if !(own.contains(m) || listed.contains_key(m) || records.contains(m)) {
                bad.push(format!(
                    "{render}: {}: metric {m} is not produced by sightline, not in tests/data/exporter-series.tsv and not a recording rule of the bundle",
                    q.origin
                ));
            }
        }
    }
    bad
}

#[test]
fn every_metric_name_is_sightlines_an_exporters_or_a_recording_rule() {
    let qs: Vec<_> = all_queries()
        .into_iter()
        .filter(|(_, q, _)| q.lang == Lang::PromQl)
        .collect();
    let parsed = stack::parse(
        &qs.iter()
            .map(|(_, q, _)| (q.lang, q.expr.clone()))
            .collect::<Vec<_>>(),
    );
    let bad = unknown_metrics(&qs, &parsed);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // A misspelt name is caught.
    let typo = vec![(
        "test".to_string(),
        Query {
            origin: "typo".into(),
            lang: Lang::PromQl,
            expr: "node_memory_MemAvailable_byte".into(),
        },
        Vec::new(),
    )];
    let parsed = stack::parse(&[(Lang::PromQl, typo[0].1.expr.clone())]);
    assert_eq!(unknown_metrics(&typo, &parsed).len(), 1);
}

// ---- stream labels ---------------------------------------------------------

/// Stream labels per `job` value ("" for streams without a job label).
type Streams = BTreeMap<String, BTreeSet<String>>;

/// The body of every top-level block `KIND "NAME" { ... }` of an Alloy config.
fn alloy_blocks(cfg: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let mut rest = cfg;
    while let Some(open) = rest.find('{') {
        let head = rest[..open]
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut depth = 0;
        let mut end = open;
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = rest[open + 1..end].to_string();
        let mut parts = head.split_whitespace();
        if let (Some(kind), Some(name)) = (parts.next(), parts.next()) {
            out.insert((kind.to_string(), name.trim_matches('"').to_string()), body);
        }
        rest = &rest[end + 1..];
    }
    out
}

/// `key = "value"` and `"key" = value` pairs in a block body.
fn quoted_after(body: &str, key: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| {
            let l = l.trim();
            let v = l.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim();
            Some(v.trim_matches(|c| c == '"' || c == ',').to_string())
        })
        .collect()
}

/// Keys of `{"k" = ..., k = ...}` maps inside a named nested block or attribute.
fn map_keys(section: &str) -> Vec<String> {
    section
        .lines()
        .filter_map(|l| {
            let l = l
                .trim()
                .trim_start_matches('{')
                .trim_start_matches('[')
                .trim();
            let (k, _) = l.split_once('=')?;
            let k = k.trim().trim_matches('"');
            (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| k.to_string())
        })
        .collect()
}

fn nested<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let start = body.find(name)?;
    let open = start + body[start..].find('{')?;
    let close = open + body[open..].find('}')?;
    Some(&body[open + 1..close])
}

/// Stream labels each `loki.source.*` pipeline of an Alloy config produces.
///
/// Follows grafana/alloy: loki.source.file adds `filename`
/// (internal/component/loki/source/file/tailer.go), path_targets keys other
/// than `__path__` become labels (local.file_match), discovery.relabel and
/// loki.relabel rules set `target_label`, stage.labels promotes its keys,
/// stage.cri sets `stream` (internal/component/loki/process/stages/
/// extensions.go, the CRI stage labels `stream`), stage.label_drop removes,
/// stage.structured_metadata does NOT create stream labels.
fn alloy_streams(cfg: &str) -> Streams {
    let blocks = alloy_blocks(cfg);
    let body = |kind: &str, name: &str| {
        blocks
            .get(&(kind.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let target_labels = |b: &str| -> Vec<(String, Option<String>)> {
        b.split("rule {")
            .skip(1)
            .filter_map(|r| {
                let t = quoted_after(r, "target_label").into_iter().next()?;
                let rep = quoted_after(r, "replacement").into_iter().next();
                Some((t, rep))
            })
            .collect()
    };
    let mut out = Streams::new();
    for ((kind, name), b) in &blocks {
        if !kind.starts_with("loki.source.") {
            continue;
        }
        let mut labels = BTreeSet::new();
        let mut job = String::new();
        if kind == "loki.source.file" {
            labels.insert("filename".to_string());
        }
        for t in quoted_after(b, "targets") {
            let refs: Vec<&str> = t.split('.').collect();
            let (fm, relabel) = match refs.as_slice() {
                ["discovery", "relabel", r, "output"] => {
                    let rb = body("discovery.relabel", r);
                    for (t, _) in target_labels(&rb) {
                        labels.insert(t);
                    }
                    let inner = quoted_after(&rb, "targets")
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    (
                        inner.split('.').nth(2).unwrap_or_default().to_string(),
                        true,
                    )
                }
                ["local", "file_match", m, "targets"] => (m.to_string(), false),
                other => panic!("Alloy: loki.source.file {name}: unsupported targets {other:?}"),
            };
            let _ = relabel;
            let fmb = body("local.file_match", &fm);
            for k in map_keys(nested(&fmb, "path_targets").unwrap_or(&fmb)) {
                if k != "__path__" {
                    labels.insert(k);
                }
            }
            if let Some(j) = quoted_after(&fmb, "\"job\"").into_iter().next() {
                job = j;
            }
        }
        if let Some(l) = nested(b, "labels") {
            labels.extend(map_keys(l));
        }
        for r in quoted_after(b, "relabel_rules") {
            let rb = body("loki.relabel", r.split('.').nth(2).unwrap());
            for (t, rep) in target_labels(&rb) {
                if t == "job" {
                    job = rep.unwrap_or_default();
                }
                labels.insert(t);
            }
        }
        for f in quoted_after(b, "forward_to") {
            let f = f.trim_matches(|c| c == '[' || c == ']');
            if let ["loki", "process", p, "receiver"] = f.split('.').collect::<Vec<_>>().as_slice()
            {
                let pb = body("loki.process", p);
                if pb.contains("stage.cri") {
                    labels.insert("stream".into());
                }
                if let Some(l) = nested(&pb, "stage.labels") {
                    labels.extend(map_keys(l).into_iter().filter(|k| k != "values"));
                }
                if let Some(d) = nested(&pb, "stage.label_drop") {
                    for v in d.split('"').skip(1).step_by(2) {
                        labels.remove(v);
                    }
                }
            }
        }
        assert!(
            out.insert(job.clone(), labels).is_none(),
            "Alloy: two pipelines with job {job:?}"
        );
    }
    out
}

/// Stream labels of each `[OUTPUT] Name loki` section of a Fluent Bit config:
/// its `Labels` keys (fluent/fluent-bit plugins/out_loki/loki.c; keys of
/// Structured_Metadata are not stream labels).
fn fluent_bit_streams(outputs: &str) -> Streams {
    let mut out = Streams::new();
    for section in outputs.split("[OUTPUT]").skip(1) {
        let kv = |k: &str| -> Option<String> {
            section.lines().find_map(|l| {
                let mut it = l.trim().splitn(2, char::is_whitespace);
                (it.next()? == k).then(|| it.next().unwrap_or_default().trim().to_string())
            })
        };
        if kv("Name").as_deref() != Some("loki") {
            continue;
        }
        let mut labels = BTreeSet::new();
        let mut job = String::new();
        for pair in kv("Labels").unwrap_or_default().split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            if k.trim() == "job" {
                job = v.trim().to_string();
            }
            labels.insert(k.trim().to_string());
        }
        assert!(
            out.insert(job.clone(), labels).is_none(),
            "Fluent Bit: two outputs with job {job:?}"
        );
    }
    out
}

fn collectors() -> Vec<(&'static str, Streams)> {
    let full = stack::render("ubuntu-cilium", "", &[]);
    let alloy = full
        .helm_values("alloy")
        .expect("alloy rendered on the full tier");
    let light = stack::render("pi4", "", &[]);
    let fb = light
        .helm_values("fluent-bit")
        .expect("fluent-bit rendered on the light tier");
    vec![
        (
            "Alloy",
            alloy_streams(alloy["alloy"]["configMap"]["content"].as_str().unwrap()),
        ),
        (
            "Fluent Bit",
            fluent_bit_streams(fb["config"]["outputs"].as_str().unwrap()),
        ),
    ]
}

/// Problems of one stream selector against every collector's streams.
fn selector_problems(
    collectors: &[(&str, Streams)],
    sel: &[(String, String, String)],
) -> Vec<String> {
    let job = sel
        .iter()
        .find(|(n, op, _)| n == "job" && op == "=")
        .map(|(_, _, v)| v.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, streams) in collectors {
        let Some(labels) = streams.get(&job) else {
            out.push(format!(
                "{name} has no stream with job={job:?} (streams: {streams:?})"
            ));
            continue;
        };
        for (l, _, _) in sel {
            if !labels.contains(l) {
                out.push(format!(
                    "label {l:?} is not a stream label of {name}'s job={job:?} stream {labels:?}; filter structured metadata or parsed fields after the selector (`{{...}} | {l}=...`)"
                ));
            }
        }
    }
    out
}

#[test]
fn collectors_set_the_stream_labels_we_expect() {
    let c = collectors();
    for (name, streams) in &c {
        assert_eq!(
            streams["kubernetes-audit"],
            ["job", "node", "resource", "verb"].map(String::from).into(),
            "{name}: user and subresource are structured metadata, not labels"
        );
        assert!(
            streams[""].contains("namespace") && streams[""].contains("container"),
            "{name}: {streams:?}"
        );
        assert!(
            streams.contains_key("systemd-journal"),
            "{name}: {streams:?}"
        );
    }
}

#[test]
fn stream_selectors_use_only_labels_both_collectors_set() {
    let c = collectors();
    let qs: Vec<_> = all_queries()
        .into_iter()
        .filter(|(_, q, _)| q.lang == Lang::LogQl)
        .collect();
    let parsed = stack::parse(
        &qs.iter()
            .map(|(_, q, _)| (q.lang, q.expr.clone()))
            .collect::<Vec<_>>(),
    );
    let mut bad = Vec::new();
    for ((render, q, _), p) in qs.iter().zip(&parsed) {
        assert!(!p.selectors.is_empty(), "{}: no stream selector", q.origin);
        for sel in &p.selectors {
            for problem in selector_problems(&c, sel) {
                bad.push(format!("{render}: {}: {problem}", q.origin));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The selector every Loki rule used before the fix: `user` inside the
/// braces, where it is no stream label, so `!~` matched every stream.
#[test]
fn the_old_loki_rule_selector_is_refused() {
    let c = collectors();
    let old = r#"count_over_time({job="kubernetes-audit", verb=~"create|get", resource=~"pods(/exec)?", user!~"system:(apiserver|k3s-supervisor)"} |= `exec` [5m])"#;
    let new = r#"count_over_time({job="kubernetes-audit", verb=~"create|get", resource=~"pods(/exec)?"} | user!~"system:(apiserver|k3s-supervisor)" |= `exec` [5m])"#;
    let parsed = stack::parse(&[(Lang::LogQl, old.into()), (Lang::LogQl, new.into())]);
    let problems = selector_problems(&c, &parsed[0].selectors[0]);
    assert_eq!(
        problems.len(),
        2,
        "refused for both collectors: {problems:?}"
    );
    assert!(problems[0].contains("\"user\""), "{problems:?}");
    assert!(selector_problems(&c, &parsed[1].selectors[0]).is_empty());
}
