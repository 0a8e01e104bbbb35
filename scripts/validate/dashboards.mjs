#!/usr/bin/env node
// Type-check Grafana dashboard JSON against the dashboard schema that Grafana
// publishes in the npm package @grafana/schema (the `Dashboard` type, generated
// from Grafana's CUE kind kinds/dashboard/dashboard_kind.cue; raw types in
// dist/types/raw/dashboard/x/types.gen.d.ts).
//
// Usage: node scripts/validate/dashboards.mjs FILE.json...
//
// Each file is one dashboard model. It is written into a TypeScript source as
// an object literal assigned to `Dashboard`, and the TypeScript compiler
// checks it: wrong types, missing required fields (schemaVersion, ...), values
// outside an enum and - because a fresh object literal gets excess-property
// checks - unknown fields where the schema has no index signature. Panel
// `options` and `fieldConfig.defaults.custom` are open maps in the schema (each
// panel plugin owns them), so they are not checked here.
//
// Prints one line per problem ("FILE: message") and exits 1 if there is any.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import ts from "typescript";

const here = path.dirname(new URL(import.meta.url).pathname);
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: dashboards.mjs FILE.json...");
  process.exit(2);
}

const opts = {
  strict: true,
  noEmit: true,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2022,
  skipLibCheck: true,
  types: [],
};
// Resolve the package from this directory, whatever the caller's cwd.
createRequire(path.join(here, "package.json")).resolve("@grafana/schema");

const sources = new Map();
files.forEach((f, i) => {
  const json = readFileSync(f, "utf8");
  JSON.parse(json); // a syntax error names the file before TypeScript does
  sources.set(path.join(here, `__dashboard_${i}.mts`), {
    file: f,
    text: `import type { Dashboard } from "@grafana/schema";\nexport const d: Dashboard = ${json};\n`,
  });
});

// The schema's enums are TypeScript enums, which TypeScript treats as nominal
// types: the JSON value "thresholds" is not assignable to
// FieldColorModeId.Thresholds although it is that member's value. The
// declarations are therefore read with every enum turned into the union of
// its values (and every `Enum.Member` type into that member's value), which
// is what the schema means for JSON.
function enumsAsUnions(text) {
  const members = new Map();
  text = text.replace(/export declare enum (\w+) \{([^}]*)\}/g, (_, name, body) => {
    const values = [];
    for (const m of body.matchAll(/(\w+)\s*=\s*("[^"]*"|'[^']*'|-?\d+)/g)) {
      members.set(`${name}.${m[1]}`, m[2]);
      values.push(m[2]);
    }
    return `export type ${name} = ${values.join(" | ")};`;
  });
  return text.replace(/\b(\w+\.\w+)\b/g, (ref) => members.get(ref) ?? ref);
}

const host = ts.createCompilerHost(opts);
const getSourceFile = host.getSourceFile.bind(host);
const fileExists = host.fileExists.bind(host);
host.fileExists = (f) => sources.has(f) || fileExists(f);
host.getSourceFile = (f, lang, ...rest) => {
  if (sources.has(f)) return ts.createSourceFile(f, sources.get(f).text, lang);
  if (f.includes("/@grafana/schema/") && f.endsWith(".d.ts")) {
    return ts.createSourceFile(f, enumsAsUnions(readFileSync(f, "utf8")), lang);
  }
  return getSourceFile(f, lang, ...rest);
};
const program = ts.createProgram([...sources.keys()], opts, host);

let problems = 0;
for (const [entry, { file }] of sources) {
  const sf = program.getSourceFile(entry);
  for (const d of ts.getPreEmitDiagnostics(program, sf)) {
    problems++;
    let where = "";
    if (d.file && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      // line 2 of the generated source is line 1 of the JSON.
      where = `:${line}`;
    }
    console.log(`${file}${where}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`);
  }
}
console.log(`${files.length} dashboard(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
