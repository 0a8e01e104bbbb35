//! The module structure, checked from the source: `cli` and `daemon` sit on
//! top of one application layer (`agent`), nothing below imports any of
//! the three, and the top-level modules form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules above the application layer; nothing imports them.
const FRONTS: [&str; 2] = ["cli", "daemon"];
/// The application layer; only the fronts import it.
const APP: &str = "agent";

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level module → the top-level modules it names through `crate::`.
fn graph(src: &Path) -> Graph {
    let mut g = Graph::new();
    walk(src, src, &mut g);
    g
}

fn walk(src: &Path, dir: &Path, g: &mut Graph) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(src, &p, g);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = p.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let deps = g.entry(top.clone()).or_default();
        for m in crate_refs(&text) {
            if m != top {
                deps.insert(m);
            }
        }
    }
}

/// The first path segment after every `crate::` outside comments,
/// including each item of a `crate::{a, b::c}` group.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Only top-level items of the group name modules.
                let mut depth = 0;
                let mut item = String::new();
                for ch in group.chars() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            push_ident(&item, &mut out);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(ch);
                    }
                }
                push_ident(&item, &mut out);
            } else {
                push_ident(rest, &mut out);
            }
        }
    }
    out
}

fn push_ident(s: &str, out: &mut BTreeSet<String>) {
    let id: String = s
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !id.is_empty() {
        out.insert(id);
    }
}

/// Every cycle's members (strongly connected components of size > 1).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = g.keys().collect();
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for d in g.get(&n).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if done.contains(n) {
            continue;
        }
        let from_n = reach(n);
        let scc: Vec<String> = g
            .keys()
            .filter(|m| *m == n || (from_n.contains(*m) && reach(m).contains(n)))
            .cloned()
            .collect();
        done.extend(scc.iter().cloned());
        if scc.len() > 1 {
            out.push(scc);
        }
    }
    out
}

fn violations(g: &Graph) -> Vec<String> {
    let mut v = Vec::new();
    for (m, deps) in g {
        for d in deps {
            if FRONTS.contains(&d.as_str()) {
                v.push(format!(
                    "{m} imports {d}: nothing may import the command line or the daemon"
                ));
            } else if d == APP && !FRONTS.contains(&m.as_str()) {
                v.push(format!(
                    "{m} imports {APP}: only cli and daemon sit above the application layer"
                ));
            }
        }
    }
    for c in cycles(g) {
        v.push(format!("module cycle: {}", c.join(" ↔ ")));
    }
    v
}

#[test]
fn layers_hold_and_modules_form_no_cycle() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.contains_key(APP), "no application layer found: {g:?}");
    for f in FRONTS {
        assert!(
            g[f].contains(APP),
            "{f} does not go through the application layer"
        );
    }
    let v = violations(&g);
    assert!(v.is_empty(), "layering broken:\n  {}", v.join("\n  "));
}

/// The checker itself finds what it must: a front imported from below, the
/// application layer imported from below, and a cycle — in the shapes the
/// source uses (paths, groups, comments that must not count).
#[test]
fn checker_catches_what_it_must() {
    let refs = crate_refs(
        "use crate::{config::X, daemon::status::{A, B}, facts};\n// crate::cli::nope\nlet x = crate::agent::Ctx; // crate::rollout\n",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["agent", "config", "daemon", "facts"]
    );
    let mut g = Graph::new();
    let mut add = |a: &str, deps: &[&str]| {
        g.insert(a.into(), deps.iter().map(|s| s.to_string()).collect());
    };
    add("cli", &["agent"]);
    add("daemon", &["agent"]);
    add("agent", &["engine", "rollout"]);
    add("engine", &["systemd"]);
    add("systemd", &[]);
    add("rollout", &[]);
    assert!(violations(&g).is_empty(), "{:?}", violations(&g));
    let mut bad = g.clone();
    bad.get_mut("rollout").unwrap().insert("daemon".into());
    bad.get_mut("systemd").unwrap().insert("engine".into());
    bad.get_mut("engine").unwrap().insert("agent".into());
    let v = violations(&bad);
    assert!(
        v.iter().any(|s| s.starts_with("rollout imports daemon")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|s| s.starts_with("engine imports agent")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|s| s.starts_with("module cycle:")
            && s.contains("engine")
            && s.contains("systemd")),
        "{v:?}"
    );
}
