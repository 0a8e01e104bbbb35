#!/usr/bin/env node
// Parse PromQL and LogQL with the upstream grammars and report what each
// query uses.
//
// Usage: node scripts/validate/queries.mjs < queries.json
//
// Input: a JSON array of {"id": string, "lang": "promql" | "logql", "expr": string}.
// Output: a JSON array, one entry per input, in order:
//   {"id", "errors": [{"from", "to", "text"}],
//    "metrics": [metric names of vector selectors (PromQL)],
//    "selectors": [[label names of one stream selector] (LogQL)]}
// Exit status 0 even when queries fail to parse: the caller (tests/queries.rs)
// decides and names the file the query came from.
//
// Grammars:
//  * PromQL: @prometheus-io/lezer-promql, the grammar the Prometheus web UI
//    uses (prometheus/prometheus web/ui/module/lezer-promql/src/promql.grammar).
//  * LogQL: @grafana/lezer-logql, the grammar Grafana's Loki query editor uses
//    (grafana/lezer-logql src/logql.grammar).
// Both are error-tolerant Lezer parsers: they always return a tree and mark
// what they could not parse with error nodes (NodeType.isError). Any error
// node is a failure.
//
// Grafana template variables are not part of either language. Before parsing,
// $__rate_interval / $__interval / $__range / $__auto (durations) become 5m
// and any other $var / ${var} / [[var]] becomes a plain identifier, which is
// what Grafana's own interpolation produces for a single-valued variable.
// label_values(expr, label) and query_result(expr) (Grafana variable query
// functions, not PromQL) are unwrapped to their inner expression.

import { readFileSync } from "node:fs";
import { parser as promql } from "@prometheus-io/lezer-promql";
import { parser as logql } from "@grafana/lezer-logql";

function interpolate(expr) {
  return expr
    .replace(/\$\{?__(rate_interval|interval|range|auto)(_ms|_s)?\}?/g, "5m")
    .replace(/\$\{([A-Za-z0-9_]+)(:[a-z]+)?\}/g, "v_$1")
    .replace(/\[\[([A-Za-z0-9_]+)\]\]/g, "v_$1")
    .replace(/\$([A-Za-z0-9_]+)/g, "v_$1");
}

// Grafana's Prometheus variable functions (public/app/plugins/datasource/
// prometheus/migrations/variableMigration.ts in grafana/grafana).
function unwrapVariableQuery(expr) {
  const t = expr.trim();
  let m = t.match(/^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$/s);
  if (m) return m[1];
  m = t.match(/^label_values\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$/s);
  if (m) return null;
  m = t.match(/^(query_result|label_names|metrics)\((.*)\)$/s);
  if (m) return m[1] === "query_result" ? m[2] : null;
  return t;
}

function errorsOf(tree, text) {
  const errors = [];
  tree.iterate({
    enter: (n) => {
      if (n.type.isError) {
        errors.push({
          from: n.from,
          to: n.to,
          text: text.slice(Math.max(0, n.from - 20), Math.min(text.length, n.to + 20)),
        });
      }
    },
  });
  return errors;
}

function promqlFacts(text) {
  const tree = promql.parse(text);
  const metrics = new Set();
  tree.iterate({
    enter: (n) => {
      if (n.name === "VectorSelector") {
        const id = n.node.getChild("Identifier");
        if (id) metrics.add(text.slice(id.from, id.to));
        // {__name__="x"} names a metric too.
        const ms = n.node.getChild("LabelMatchers");
        for (const m of ms ? ms.getChildren("UnquotedLabelMatcher") : []) {
          const name = m.getChild("LabelName");
          const op = m.getChild("MatchOp");
          const val = m.getChild("StringLiteral");
          if (name && op && val && text.slice(name.from, name.to) === "__name__" &&
              text.slice(op.from, op.to) === "=") {
            metrics.add(JSON.parse(text.slice(val.from, val.to).replace(/^'|'$/g, '"')));
          }
        }
      }
    },
  });
  return { errors: errorsOf(tree, text), metrics: [...metrics].sort(), selectors: [] };
}

function logqlFacts(text) {
  const tree = logql.parse(text);
  const selectors = [];
  tree.iterate({
    enter: (n) => {
      if (n.name === "Selector") {
        const labels = [];
        const matchers = n.node.getChild("Matchers");
        const walk = (node) => {
          if (!node) return;
          for (const m of node.getChildren("Matcher")) {
            const id = m.getChild("Identifier");
            const op = id && id.nextSibling;
            const val = m.getChild("String");
            labels.push({
              name: text.slice(id.from, id.to),
              op: op ? text.slice(op.from, op.to) : "",
              value: val ? JSON.parse(text.slice(val.from, val.to).replace(/^`|`$/g, '"')) : "",
            });
          }
          walk(node.getChild("Matchers"));
        };
        walk(matchers);
        selectors.push(labels);
      }
    },
  });
  return { errors: errorsOf(tree, text), metrics: [], selectors };
}

const input = JSON.parse(readFileSync(0, "utf8"));
const out = input.map(({ id, lang, expr }) => {
  let text = interpolate(expr);
  if (lang === "promql") {
    text = unwrapVariableQuery(text);
    if (text === null) return { id, errors: [], metrics: [], selectors: [] };
    return { id, ...promqlFacts(text) };
  }
  if (lang === "logql") return { id, ...logqlFacts(text) };
  return { id, errors: [{ from: 0, to: 0, text: `unknown language ${lang}` }], metrics: [], selectors: [] };
});
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
