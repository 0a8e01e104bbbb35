#!/usr/bin/env node
// Validate the custom-resource (CRD) objects in rendered stage files, offline.
//
// Usage: node scripts/validate/crds.mjs [--quiet] [--helm-controller vX.Y.Z] PATH...
//
// PATH is a file or a directory (searched recursively for *.yaml, *.yml,
// *.json). A file may hold several YAML documents separated by `---`; a
// document may be JSON. Built-in Kubernetes kinds (v1, apps/v1,
// networking.k8s.io/v1, ...) are skipped: scripts/validate/k8s checks them.
// Every other object must be of a kind this script knows how to check, else it
// fails ("unknown CRD kind"), so nothing slips through unchecked.
//
// How kinds are checked
//  * monitoring.coreos.com/{v1,v1alpha1,v1beta1} (PrometheusRule,
//    ServiceMonitor, PodMonitor, ...): the npm package
//    @kubernetes-models/prometheus-operator. Its models carry validate
//    functions compiled from the OpenAPI schema of the operator's Go API types
//    (types, required fields, enums, patterns); `new Model(obj).validate()`
//    runs them without any cluster. Those schemas do not forbid unknown
//    fields, so unknown fields are found separately by walking the object
//    against the package's TypeScript declarations (I<Kind> interfaces) with
//    the TypeScript compiler API.
//  * helm.cattle.io/v1 HelmChart, HelmChartConfig and cilium.io/v1alpha1
//    TracingPolicy, TracingPolicyNamespaced: no npm package ships them, so
//    this file holds structural schemas written from the upstream Go types and
//    generated CRDs (facts and their sources are cited next to each schema).
//    Fields typed as core Kubernetes structs (PodSecurityContext,
//    SecurityContext) are checked with the kubernetes-models package.
//  * metadata of every custom object: ObjectMeta from
//    @kubernetes-models/apimachinery (types + unknown fields), plus the
//    API server's rules that name (or generateName) is set and is a DNS-1123
//    subdomain.
//
// Rules applied everywhere, as kube-apiserver does for structural schemas:
// unknown fields are errors (the API server would silently prune them; for
// generated manifests that is always a bug), wrong types are errors, required
// fields must be present, enums are enforced. A null value counts as absent:
// the API server prunes nulls of non-nullable fields before validation
// (kubernetes/apiextensions-apiserver pkg/apiserver/schema/defaulting/
// prunenulls.go @ 1aa2717a552ee6ca1e2a18f1f8ffccde981db923).
// YAML is read as YAML 1.1 (like the go-yaml based decoder k3s uses), so an
// unquoted `on`/`yes` is a boolean and is reported where a string is expected;
// duplicate keys are errors.
//
// Output: one line per problem
//   FAIL <file> doc[<index>] <Kind>/<namespace>/<name>: <JSON path>: <message>
// (<index> counts the `---`-separated documents from 0, empty ones included,
// the same numbering as scripts/validate/k8s). Exit 0 when every object is
// valid, 1 when any failed, 2 on usage errors.
//
// --helm-controller vX.Y.Z additionally rejects HelmChart/HelmChartConfig
// fields (and enum values) that the given helm-controller release does not
// have yet; an older controller's CRD would silently prune them.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import ts from "typescript";

const HERE = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------
// API groups served by kube-apiserver itself ("" = core). Same list as
// scripts/validate/k8s. Any group without a dot is built-in too.
const BUILTIN_GROUPS = new Set([
  "", "admissionregistration.k8s.io", "apiextensions.k8s.io",
  "apiregistration.k8s.io", "apps", "authentication.k8s.io",
  "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io",
  "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "extensions",
  "flowcontrol.apiserver.k8s.io", "internal.apiserver.k8s.io",
  "networking.k8s.io", "node.k8s.io", "policy", "rbac.authorization.k8s.io",
  "resource.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
  "storagemigration.k8s.io",
]);

const apiGroup = (apiVersion) => (apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.lastIndexOf("/")) : "");
const isBuiltin = (apiVersion) => {
  const g = apiGroup(apiVersion);
  return BUILTIN_GROUPS.has(g) || !g.includes(".");
};

// ---------------------------------------------------------------------------
// Small structural-schema language for the kinds no package covers.

const str = (o = {}) => ({ t: "string", ...o });
const bool = (o = {}) => ({ t: "boolean", ...o });
const int32 = (o = {}) => ({ t: "integer", format: "int32", ...o });
const int64 = (o = {}) => ({ t: "integer", format: "int64", ...o });
const oneOf = (values, o = {}) => ({ t: "string", enum: values, ...o });
const obj = (props, o = {}) => ({ t: "object", props, required: [], ...o });
const arr = (items, o = {}) => ({ t: "array", items, ...o });
const mapOf = (values, o = {}) => ({ t: "map", values, ...o });
const intOrString = (o = {}) => ({ t: "int-or-string", ...o });
const anyValue = (o = {}) => ({ t: "any", ...o }); // x-kubernetes-preserve-unknown-fields
// A field whose type is a Kubernetes struct modelled by an npm package.
const typed = (ref, o = {}) => ({ t: "typed", ref, ...o });

// Go's time.ParseDuration syntax, e.g. "300s", "1h30m", "1.5h", "0".
const GO_DURATION = /^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$/;
const goDuration = (o = {}) =>
  str({
    check: (v) => (GO_DURATION.test(v) ? null : `"${v}" is not a Go duration (e.g. "300s", "10m", "1h30m")`),
    ...o,
  });

// Typed refs: [module specifier, exported class, TypeScript interface].
const TYPED = {
  ObjectMeta: ["@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta", "ObjectMeta", "IObjectMeta"],
  PodSecurityContext: ["kubernetes-models/v1/PodSecurityContext", "PodSecurityContext", "IPodSecurityContext"],
  SecurityContext: ["kubernetes-models/v1/SecurityContext", "SecurityContext", "ISecurityContext"],
};

// ---------------------------------------------------------------------------
// helm.cattle.io/v1 — k3s's helm-controller.
// Source: github.com/k3s-io/helm-controller @ 21a911f86f912a79e06e4f1596c54d8237320e6e
// (tag v0.17.7): pkg/apis/helm.cattle.io/v1/types.go (HelmChartSpec,
// HelmChartConfigSpec, SecretSpec, HelmChartStatus, enums FailurePolicy,
// HelmDriver, ServerSide) and the generated CRDs
// pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml and
// helm.cattle.io_helmchartconfigs.yaml (types/formats below, e.g.
// backOffLimit: integer/int32, timeout: string, set: map of int-or-string,
// values: x-kubernetes-preserve-unknown-fields). No top-level or spec field is
// required in either CRD. Both kinds are namespaced.
// `since`: first release carrying the field in each release line, found by
// reading types.go at every v0.14.x-v0.17.x tag (the 0.16 line gets
// backports). Used only with --helm-controller.
// timeout is a metav1.Duration; its UnmarshalJSON uses time.ParseDuration
// (kubernetes/apimachinery pkg/apis/meta/v1/duration.go @
// eed236ceee2c19c2753a3d93ac0631dc20750454), so helm-controller cannot decode a
// HelmChart whose timeout is not a Go duration.

const localObjectReference = () => obj({ name: str() }); // corev1.LocalObjectReference, name defaults to ""

const helmSecretSpec = obj({
  // SecretSpec
  name: str(),
  keys: arr(str()),
  ignoreUpdates: bool(),
});

const FAILURE_POLICY = oneOf(["abort", "reinstall", "retry"], {
  enumSince: { retry: { "0.16": "0.16.25", "0.17": "0.17.6" } },
});
const SERVER_SIDE = oneOf(["true", "false", "auto"], { since: { "0.16": "0.16.26", "0.17": "0.17.7" } });

const helmChartSpec = obj({
  targetNamespace: str(),
  createNamespace: bool({ since: { "0.15": "0.15.0", "0.16": "0.16.0", "0.17": "0.17.0" } }),
  chart: str(),
  version: str(),
  repo: str(),
  repoCA: str(),
  repoCAConfigMap: localObjectReference(),
  set: mapOf(intOrString()),
  values: anyValue({ since: { "0.16": "0.16.20", "0.17": "0.17.0" } }),
  valuesContent: str(),
  valuesSecrets: arr(helmSecretSpec, { since: { "0.16": "0.16.7", "0.17": "0.17.0" } }),
  // controller side: only "" and "v3" are accepted, anything else fails the
  // chart with "Unsupported version" (pkg/controllers/chart/chart.go, the
  // `switch chart.Spec.HelmVersion`, same commit).
  helmVersion: str({ check: (v) => (v === "" || v === "v3" ? null : `helm-controller supports only "v3" (or empty), got "${v}"`) }),
  bootstrap: bool(),
  takeOwnership: bool({ since: { "0.16": "0.16.14", "0.17": "0.17.0" } }),
  serverSide: SERVER_SIDE,
  forceConflicts: bool({ since: { "0.16": "0.16.25", "0.17": "0.17.6" } }),
  chartContent: str(),
  jobImage: str(),
  backOffLimit: int32({ since: { "0.15": "0.15.3", "0.16": "0.16.0", "0.17": "0.17.0" } }),
  timeout: goDuration(),
  failurePolicy: FAILURE_POLICY,
  authSecret: localObjectReference(),
  authPassCredentials: bool(),
  insecureSkipTLSVerify: bool({ since: { "0.15": "0.15.13", "0.16": "0.16.4", "0.17": "0.17.0" } }),
  plainHTTP: bool({ since: { "0.15": "0.15.13", "0.16": "0.16.4", "0.17": "0.17.0" } }),
  dockerRegistrySecret: localObjectReference({
    since: { "0.15": "0.15.1", "0.16": "0.16.0", "0.17": "0.17.0" },
  }),
  podSecurityContext: typed("PodSecurityContext", { since: { "0.15": "0.15.6", "0.16": "0.16.0", "0.17": "0.17.0" } }),
  securityContext: typed("SecurityContext", { since: { "0.15": "0.15.6", "0.16": "0.16.0", "0.17": "0.17.0" } }),
  driver: oneOf(["secret", "configmap"], { since: { "0.16": "0.16.21", "0.17": "0.17.1" } }),
});

const helmChartStatus = obj({
  jobName: str(),
  conditions: arr(
    obj(
      { type: str(), status: str(), reason: str(), message: str() },
      { required: ["type", "status"] },
    ),
  ),
});

const helmChartConfigSpec = obj({
  values: anyValue({ since: { "0.16": "0.16.20", "0.17": "0.17.0" } }),
  valuesContent: str(),
  valuesSecrets: arr(helmSecretSpec, { since: { "0.16": "0.16.7", "0.17": "0.17.0" } }),
  failurePolicy: FAILURE_POLICY,
  serverSide: SERVER_SIDE,
  forceConflicts: bool({ since: { "0.16": "0.16.25", "0.17": "0.17.6" } }),
});

// ---------------------------------------------------------------------------
// cilium.io/v1alpha1 — Tetragon TracingPolicy / TracingPolicyNamespaced.
// Source: github.com/cilium/tetragon @ 1de2ed8ebea18e56257dc59597aa13bf8f0e471e
// (tag v1.7.0, CRD schema version 1.7.17): pkg/k8s/apis/cilium.io/v1alpha1/
// tracing_policy_types.go (TracingPolicy, TracingPolicyNamespaced,
// TracingPolicySpec), types.go (KProbeSpec, KProbeArg, KProbeSelector,
// ArgSelector, ActionSelector, BinarySelector, PIDSelector, NamespaceSelector,
// NamespaceChangesSelector, CapabilitiesSelector, TracepointSpec, UProbeSpec,
// UsdtSpec, LsmHookSpec, ListSpec, OptionSpec, EnforcerSpec, KprobeIgnore) and
// the generated CRDs pkg/k8s/apis/cilium.io/client/crds/v1alpha1/
// cilium.io_tracingpolicies.yaml, cilium.io_tracingpoliciesnamespaced.yaml.
// From the CRD: metadata and spec are required; uint32/int32 fields are
// integer/int32, uint64 fields integer/int64; `minimum: 0` on KProbeArg.index,
// .sizeArgIndex and ArgSelector.index/.args[]; maxItems 16 on tags and 1 on
// matchBinaries/matchParentBinaries; podSelector/containerSelector/
// hostSelector are slim LabelSelectors (matchLabels values: maxLength 63 and
// the label-value pattern). Fields that are `required` in the CRD but carry a
// default (KProbeArg.type: auto) are optional here, because the API server
// applies defaults before it validates.
// TracingPolicyNamespaced: x-kubernetes-validations rule
// "!has(self.spec.hostSelector)". TracingPolicy is cluster-scoped,
// TracingPolicyNamespaced namespaced.
// Fields added on tetragon main after v1.7.0 (e.g. spec.nodeSelector,
// selectors[].matchWorkloads, args[].btfTypeModule) are rejected.

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const slimLabelSelector = () =>
  obj({
    matchLabels: mapOf(str({ maxLength: 63, pattern: LABEL_VALUE })),
    matchExpressions: arr(
      obj(
        {
          key: str(),
          operator: oneOf(["In", "NotIn", "Exists", "DoesNotExist"]),
          values: arr(str()),
        },
        { required: ["key", "operator"] },
      ),
    ),
  });

const ARG_TYPES = [
  "auto", "int", "sint8", "int8", "uint8", "sint16", "int16", "uint16", "uint32", "sint32", "int32",
  "ulong", "uint64", "size_t", "long", "sint64", "int64", "char_buf", "char_iovec", "skb", "sock",
  "sockaddr", "socket", "sockaddr_un", "string", "fd", "file", "filename", "path", "nop", "bpf_attr",
  "perf_event", "bpf_map", "user_namespace", "capability", "kiocb", "iov_iter", "cred", "const_buf",
  "load_info", "module", "syscall64", "kernel_cap_t", "cap_inheritable", "cap_permitted",
  "cap_effective", "linux_binprm", "data_loc", "net_device", "bpf_cmd", "dentry", "bpf_prog",
];

const kprobeArg = obj(
  {
    index: int32({ minimum: 0 }),
    type: oneOf(ARG_TYPES, { default: "auto" }),
    resolve: str(),
    sizeArgIndex: int32({ minimum: 0 }),
    returnCopy: bool(),
    maxData: bool(),
    label: str(),
    source: str(),
    btfType: str(),
  },
  { required: ["index", "type"] },
);

const ARG_OPERATORS = [
  "Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix", "GreaterThan", "LessThan",
  "GT", "LT", "Mask", "SPort", "NotSPort", "SPortPriv", "NotSportPriv", "DPort", "NotDPort",
  "DPortPriv", "NotDPortPriv", "SAddr", "NotSAddr", "DAddr", "NotDAddr", "Protocol", "Family",
  "State", "InMap", "NotInMap", "CapabilitiesGained", "InRange", "NotInRange", "SubString",
  "SubStringIgnCase", "CelExpr", "FileType", "NotFileType",
];
const argSelector = obj(
  {
    index: int32({ minimum: 0 }),
    args: arr(int32({ minimum: 0 })),
    operator: oneOf(ARG_OPERATORS),
    values: arr(str()),
  },
  { required: ["operator"] },
);

const ACTIONS = [
  "Post", "FollowFD", "UnfollowFD", "Sigkill", "CopyFD", "Override", "GetUrl", "DnsLookup",
  "NoPost", "Signal", "TrackSock", "UntrackSock", "NotifyEnforcer", "CleanupEnforcerNotification",
  "Set",
];
const actionSelector = obj(
  {
    action: oneOf(ACTIONS),
    argFd: int32(),
    argName: int32(),
    argUrl: str(),
    argFqdn: str(),
    argError: int32(),
    argSig: int32(),
    argSock: int32(),
    argIndex: int32(),
    argValue: int32(),
    argRegs: arr(str()),
    rateLimit: str(),
    rateLimitScope: str(),
    kernelStackTrace: bool(),
    userStackTrace: bool(),
    imaHash: bool(),
  },
  { required: ["action"] },
);

const binarySelector = obj(
  {
    operator: oneOf(["In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"]),
    values: arr(str()),
    followChildren: bool(),
  },
  { required: ["operator", "values"] },
);
const IN_NOTIN = ["In", "NotIn"];
const capabilitiesSelector = obj(
  {
    type: oneOf(["Effective", "Inheritable", "Permitted"]),
    operator: oneOf(IN_NOTIN),
    isNamespaceCapability: bool(),
    values: arr(str()),
  },
  { required: ["operator", "values"] },
);

const kprobeSelector = obj({
  matchPIDs: arr(
    obj(
      { operator: oneOf(IN_NOTIN), values: arr(int32()), isNamespacePID: bool(), followForks: bool() },
      { required: ["operator", "values"] },
    ),
  ),
  matchArgs: arr(argSelector),
  matchData: arr(argSelector),
  matchActions: arr(actionSelector),
  matchReturnArgs: arr(argSelector),
  matchReturnActions: arr(actionSelector),
  matchBinaries: arr(binarySelector, { maxItems: 1 }),
  matchParentBinaries: arr(binarySelector, { maxItems: 1 }),
  matchNamespaces: arr(
    obj(
      {
        namespace: oneOf(["Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren", "Cgroup", "User"]),
        operator: oneOf(IN_NOTIN),
        values: arr(str()),
      },
      { required: ["namespace", "operator", "values"] },
    ),
  ),
  matchNamespaceChanges: arr(
    obj({ operator: oneOf(IN_NOTIN), values: arr(str()) }, { required: ["operator", "values"] }),
  ),
  matchCapabilities: arr(capabilitiesSelector),
  matchCapabilityChanges: arr(capabilitiesSelector),
  macros: arr(str()),
});

const tags = () => arr(str(), { maxItems: 16 });
const kprobeSpec = obj(
  {
    call: str(),
    return: bool(),
    syscall: bool(),
    message: str(),
    args: arr(kprobeArg),
    data: arr(kprobeArg),
    returnArg: kprobeArg,
    returnArgAction: str(),
    selectors: arr(kprobeSelector),
    tags: tags(),
    ignore: obj({ callNotFound: bool() }),
  },
  { required: ["call"] },
);

const tracingPolicySpec = obj({
  kprobes: arr(kprobeSpec),
  tracepoints: arr(
    obj(
      {
        subsystem: str(),
        event: str(),
        message: str(),
        args: arr(kprobeArg),
        selectors: arr(kprobeSelector),
        tags: tags(),
        raw: bool(),
      },
      { required: ["subsystem", "event"] },
    ),
  ),
  loader: bool(),
  uprobes: arr(
    obj(
      {
        path: str(),
        btfPath: str(),
        symbols: arr(str()),
        offsets: arr(int64()),
        addrs: arr(int64()),
        refCtrOffsets: arr(int64()),
        message: str(),
        selectors: arr(kprobeSelector),
        args: arr(kprobeArg),
        data: arr(kprobeArg),
        tags: tags(),
        return: bool(),
        returnArg: kprobeArg,
      },
      { required: ["path"] },
    ),
  ),
  lsmhooks: arr(
    obj(
      { hook: str(), message: str(), args: arr(kprobeArg), selectors: arr(kprobeSelector), tags: tags() },
      { required: ["hook"] },
    ),
  ),
  usdts: arr(
    obj(
      {
        path: str(),
        btfPath: str(),
        provider: str(),
        name: str(),
        tags: tags(),
        message: str(),
        args: arr(kprobeArg),
        selectors: arr(kprobeSelector),
      },
      { required: ["path", "provider", "name"] },
    ),
  ),
  fentries: arr(kprobeSpec),
  podSelector: slimLabelSelector(),
  containerSelector: slimLabelSelector(),
  hostSelector: slimLabelSelector(),
  lists: arr(
    obj(
      {
        name: str(),
        values: arr(str()),
        type: oneOf(["syscalls", "generated_syscalls", "generated_ftrace"]),
        pattern: str(),
        validated: bool(),
      },
      { required: ["name"] },
    ),
  ),
  enforcers: arr(obj({ calls: arr(str()) }, { required: ["calls"] })),
  options: arr(obj({ name: str(), value: str() }, { required: ["name"] })),
  selectorsMacros: mapOf(kprobeSelector),
});

// Agent-side rules: the API server accepts these objects, but the Tetragon
// agent refuses to load the policy (all at tetragon v1.7.0, commit above; see
// also docs/research/tetragon-crd.md):
//  * at most 5 selectors per probe: pkg/selectors/selectors.go (MaxSelectors
//    = 5), checked in pkg/selectors/kernel.go InitKernelSelectorState;
//  * at most 5 matchArgs+matchData filters per selector (1 on kernels
//    without large BPF programs, < 5.3): pkg/selectors/kernel.go ParseMatchArgs;
//  * a matchArgs/matchData filter without `args` must name the `index` of a
//    declared args[]/data[] entry ("argFilter for unknown index"):
//    pkg/selectors/kernel.go argIndexType. Selectors get the probe's own
//    args/data for kprobes, fentries and uprobes, its args and no data for
//    lsmhooks and usdts (pkg/sensors/tracing/generic{kprobe,uprobe,lsm,usdt}.go);
//    tracepoints derive theirs from the tracepoint format, so they are skipped;
//  * message: at least 2 bytes (shorter fails the policy), at most 256 (longer
//    is truncated with a warning; reported here so nothing is cut silently):
//    pkg/sensors/tracing/message.go;
//  * followChildren only with operator In/NotIn: pkg/selectors/kernel.go
//    ("followChildren not yet implemented");
//  * rateLimit: unsigned number with an optional s/m/h suffix, and
//    rateLimitScope one of thread/process/global: pkg/selectors/kernel.go
//    parseRateLimit, actionRateLimitScope.
const RATE_LIMIT = /^[0-9]+[sSmMhH]?$/;
function tetragonAgentRules(o) {
  const errs = [];
  const spec = o.spec;
  if (!isPlainObject(spec)) return errs;
  const indexes = (list) => new Set((Array.isArray(list) ? list : []).filter(isPlainObject).map((a) => a.index ?? 0));
  for (const kind of ["kprobes", "fentries", "tracepoints", "uprobes", "lsmhooks", "usdts"]) {
    if (!Array.isArray(spec[kind])) continue;
    spec[kind].forEach((probe, i) => {
      if (!isPlainObject(probe)) return;
      const base = joinPath(joinPath(".spec", kind), i);
      if (typeof probe.message === "string" && probe.message !== "") {
        const n = Buffer.byteLength(probe.message);
        if (n < 2) errs.push({ path: `${base}.message`, msg: "agent: message must be at least 2 bytes" });
        if (n > 256) errs.push({ path: `${base}.message`, msg: `agent: message is ${n} bytes; the agent truncates it to 256` });
      }
      if (!Array.isArray(probe.selectors)) return;
      if (probe.selectors.length > 5)
        errs.push({ path: `${base}.selectors`, msg: `agent: at most 5 selectors per probe (${probe.selectors.length} given)` });
      const sig = kind === "tracepoints" ? null : { matchArgs: indexes(probe.args), matchData: indexes(["kprobes", "fentries", "uprobes"].includes(kind) ? probe.data : []) };
      probe.selectors.forEach((sel, j) => {
        if (!isPlainObject(sel)) return;
        const sbase = joinPath(`${base}.selectors`, j);
        const nArgs = (Array.isArray(sel.matchArgs) ? sel.matchArgs.length : 0) + (Array.isArray(sel.matchData) ? sel.matchData.length : 0);
        if (nArgs > 5) errs.push({ path: sbase, msg: `agent: at most 5 matchArgs+matchData filters per selector (${nArgs} given)` });
        for (const field of sig ? ["matchArgs", "matchData"] : []) {
          if (!Array.isArray(sel[field])) continue;
          sel[field].forEach((f, k) => {
            if (!isPlainObject(f) || (Array.isArray(f.args) && f.args.length)) return;
            const idx = f.index ?? 0;
            if (!sig[field].has(idx)) {
              const decl = field === "matchArgs" ? "args" : "data";
              errs.push({ path: `${joinPath(`${sbase}.${field}`, k)}.index`, msg: `agent: index ${idx} names no entry of the probe's ${decl}[] (declared: ${[...sig[field]].join(", ") || "none"})` });
            }
          });
        }
        for (const field of ["matchBinaries", "matchParentBinaries"]) {
          if (!Array.isArray(sel[field])) continue;
          sel[field].forEach((b, k) => {
            if (isPlainObject(b) && b.followChildren === true && !["In", "NotIn"].includes(b.operator))
              errs.push({ path: `${joinPath(`${sbase}.${field}`, k)}.followChildren`, msg: "agent: followChildren works only with operator In or NotIn" });
          });
        }
        for (const field of ["matchActions", "matchReturnActions"]) {
          if (!Array.isArray(sel[field])) continue;
          sel[field].forEach((a, k) => {
            if (!isPlainObject(a)) return;
            const abase = joinPath(`${sbase}.${field}`, k);
            if (typeof a.rateLimit === "string" && a.rateLimit !== "" && !RATE_LIMIT.test(a.rateLimit))
              errs.push({ path: `${abase}.rateLimit`, msg: `agent: rateLimit "${a.rateLimit}" must be a number with an optional s, m or h suffix` });
            if (typeof a.rateLimitScope === "string" && a.rateLimitScope !== "" && !["thread", "process", "global"].includes(a.rateLimitScope))
              errs.push({ path: `${abase}.rateLimitScope`, msg: `agent: rateLimitScope must be one of thread, process, global` });
          });
        }
      });
    });
  }
  return errs;
}

// ---------------------------------------------------------------------------
// Registry of known CRD kinds.

const STRUCTURAL = {
  "helm.cattle.io/v1": {
    HelmChart: {
      namespaced: true,
      schema: obj({ apiVersion: str(), kind: str(), metadata: typed("ObjectMeta"), spec: helmChartSpec, status: helmChartStatus }),
    },
    HelmChartConfig: {
      namespaced: true,
      schema: obj({ apiVersion: str(), kind: str(), metadata: typed("ObjectMeta"), spec: helmChartConfigSpec }),
    },
  },
  "cilium.io/v1alpha1": {
    TracingPolicy: {
      namespaced: false,
      schema: obj(
        { apiVersion: str(), kind: str(), metadata: typed("ObjectMeta"), spec: tracingPolicySpec },
        { required: ["metadata", "spec"] },
      ),
      extra: tetragonAgentRules,
    },
    TracingPolicyNamespaced: {
      namespaced: true,
      schema: obj(
        { apiVersion: str(), kind: str(), metadata: typed("ObjectMeta"), spec: tracingPolicySpec },
        { required: ["metadata", "spec"] },
      ),
      extra: (o) => [
        ...(isPlainObject(o.spec) && o.spec.hostSelector != null
          ? [{ path: ".spec.hostSelector", msg: "TracingPolicyNamespaced should have a null spec.hostSelector." }]
          : []),
        ...tetragonAgentRules(o),
      ],
    },
  },
};

// Groups whose kinds come from an npm package of @kubernetes-models models.
// The module for kind K of apiVersion G/V is `${pkg}/${G}/${V}/${K}`; it
// exports class K (with static apiVersion/kind) and interface I${K}.
const PACKAGED = {
  "monitoring.coreos.com": { pkg: "@kubernetes-models/prometheus-operator", versions: ["v1", "v1alpha1", "v1beta1"] },
};

// ---------------------------------------------------------------------------
// Output helpers.

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;
const joinPath = (base, seg) =>
  typeof seg === "number" ? `${base}[${seg}]` : IDENT.test(seg) ? `${base}.${seg}` : `${base}[${JSON.stringify(seg)}]`;
const showPath = (p) => p || ".";
const ajvPathToJson = (instancePath, base = "") =>
  instancePath
    .split("/")
    .slice(1)
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((acc, s) => joinPath(acc, /^\d+$/.test(s) ? Number(s) : s), base);

const typeName = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);
const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const preview = (v) => {
  const s = JSON.stringify(v);
  return s && s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

// ---------------------------------------------------------------------------
// Version gating for --helm-controller.

const parseVersion = (v) => {
  const m = /^v?(\d+)\.(\d+)\.(\d+)$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
};
const cmpVersion = (a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

// since: {"0.16": "0.16.20", ...}. True when `ctlVersion` lacks the field.
function tooNew(since, ctlVersion) {
  if (!since || !ctlVersion) return false;
  const line = `${ctlVersion[0]}.${ctlVersion[1]}`;
  if (since[line]) return cmpVersion(ctlVersion, parseVersion(since[line])) < 0;
  // release line not listed: absent in lines older than the oldest listed line,
  // present in newer ones
  const lines = Object.keys(since).map((l) => parseVersion(`${l}.0`));
  const oldest = lines.reduce((a, b) => (cmpVersion(a, b) <= 0 ? a : b));
  return cmpVersion(ctlVersion, oldest) < 0;
}

// ---------------------------------------------------------------------------
// Structural validation.

function checkNode(schema, value, p, ctx, errs) {
  if (value === null || value === undefined) return; // null == absent (pruned)
  const err = (msg, at = p) => errs.push({ path: at, msg });
  switch (schema.t) {
    case "any":
      return;
    case "string":
      if (typeof value !== "string") return err(`must be a string, got ${typeName(value)} ${preview(value)}`);
      if (schema.enum && !schema.enum.includes(value))
        return err(`unsupported value ${preview(value)}: must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
      if (schema.enumSince?.[value] && tooNew(schema.enumSince[value], ctx.helmController))
        return err(`value ${preview(value)} needs helm-controller >= ${Object.values(schema.enumSince[value]).join(" / ")}`);
      if (schema.maxLength !== undefined && [...value].length > schema.maxLength)
        return err(`must be at most ${schema.maxLength} characters`);
      if (schema.pattern && !schema.pattern.test(value)) return err(`${preview(value)} does not match ${schema.pattern}`);
      if (schema.check) {
        const m = schema.check(value);
        if (m) err(m);
      }
      return;
    case "boolean":
      if (typeof value !== "boolean") err(`must be a boolean, got ${typeName(value)} ${preview(value)}`);
      return;
    case "integer": {
      if (typeof value !== "number" || !Number.isInteger(value))
        return err(`must be an integer, got ${typeName(value)} ${preview(value)}`);
      if (schema.format === "int32" && (value < -2147483648 || value > 2147483647)) return err("out of int32 range");
      if (schema.format === "int64" && !Number.isSafeInteger(value)) return err("out of the exactly representable int64 range");
      if (schema.minimum !== undefined && value < schema.minimum) err(`must be >= ${schema.minimum}`);
      return;
    }
    case "int-or-string":
      if (!(typeof value === "string" || (typeof value === "number" && Number.isInteger(value))))
        err(`must be an integer or a string, got ${typeName(value)} ${preview(value)}`);
      return;
    case "array":
      if (!Array.isArray(value)) return err(`must be a list, got ${typeName(value)}`);
      if (schema.maxItems !== undefined && value.length > schema.maxItems)
        err(`must have at most ${schema.maxItems} item(s), has ${value.length}`);
      value.forEach((v, i) => checkNode(schema.items, v, joinPath(p, i), ctx, errs));
      return;
    case "map":
      if (!isPlainObject(value)) return err(`must be a mapping, got ${typeName(value)}`);
      for (const [k, v] of Object.entries(value)) checkNode(schema.values, v, joinPath(p, k), ctx, errs);
      return;
    case "object": {
      if (!isPlainObject(value)) return err(`must be a mapping, got ${typeName(value)}`);
      for (const [k, v] of Object.entries(value)) {
        const sub = schema.props[k];
        if (!sub) {
          err(`unknown field "${k}" (allowed: ${Object.keys(schema.props).join(", ")})`, joinPath(p, k));
          continue;
        }
        if (v !== null && tooNew(sub.since, ctx.helmController)) {
          err(`field "${k}" needs helm-controller >= ${Object.values(sub.since).join(" / ")} (--helm-controller ${ctx.helmControllerRaw})`, joinPath(p, k));
          continue;
        }
        checkNode(sub, v, joinPath(p, k), ctx, errs);
      }
      for (const r of schema.required) {
        if ((value[r] === undefined || value[r] === null) && schema.props[r].default === undefined)
          err(`required field "${r}" is missing`);
      }
      return;
    }
    case "typed":
      errs.push(...ctx.checkTyped(TYPED[schema.ref], value, p));
      return;
    default:
      throw new Error(`bad schema node ${schema.t}`);
  }
}

// ---------------------------------------------------------------------------
// Unknown-field detection from the packages' TypeScript declarations.

class TypeIndex {
  constructor(refs) {
    // refs: [[alias, moduleSpecifier, interfaceName]]
    this.entry = path.join(HERE, "__sightline_crds_entry__.ts");
    this.src = refs.map(([alias, mod, iface]) => `import type { ${iface} as ${alias} } from ${JSON.stringify(mod)};\nexport type { ${alias} };\n`).join("");
    const opts = {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      noEmit: true,
      skipLibCheck: true,
      types: [],
    };
    const host = ts.createCompilerHost(opts);
    const getSourceFile = host.getSourceFile.bind(host);
    const fileExists = host.fileExists.bind(host);
    const readFile = host.readFile.bind(host);
    host.getSourceFile = (f, lang, ...rest) => (f === this.entry ? ts.createSourceFile(f, this.src, lang) : getSourceFile(f, lang, ...rest));
    host.fileExists = (f) => f === this.entry || fileExists(f);
    host.readFile = (f) => (f === this.entry ? this.src : readFile(f));
    this.program = ts.createProgram([this.entry], opts, host);
    this.checker = this.program.getTypeChecker();
    const sf = this.program.getSourceFile(this.entry);
    const diags = ts.getPreEmitDiagnostics(this.program, sf);
    if (diags.length) {
      throw new Error(`cannot load type declarations: ${diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, " ")).join("; ")}`);
    }
    this.types = new Map();
    for (const sym of this.checker.getExportsOfModule(this.checker.getSymbolAtLocation(sf))) {
      const target = sym.flags & ts.SymbolFlags.Alias ? this.checker.getAliasedSymbol(sym) : sym;
      this.types.set(sym.name, this.checker.getDeclaredTypeOfSymbol(target));
    }
  }

  propType(sym) {
    const c = this.checker;
    const t = c.getTypeOfSymbol ? c.getTypeOfSymbol(sym) : c.getTypeOfSymbolAtLocation(sym, sym.valueDeclaration);
    return c.getNonNullableType(t);
  }

  members(type) {
    return type.isUnion() ? type.types : [type];
  }

  // Report keys of `value` that the TypeScript type does not declare.
  unknownFields(type, value, p, errs) {
    const c = this.checker;
    if (value === null || typeof value !== "object") return;
    type = c.getNonNullableType(type);
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    if (Array.isArray(value)) {
      const arrType = this.members(type).find((m) => c.isArrayType(m) || c.isTupleType(m));
      if (!arrType) return; // type mismatch: reported by the schema validator
      const elem = c.getTypeArguments(arrType)[0];
      if (elem) value.forEach((v, i) => this.unknownFields(elem, v, joinPath(p, i), errs));
      return;
    }
    const candidates = this.members(type).filter(
      (m) => m.flags & ts.TypeFlags.Object && !c.isArrayType(m) && !c.isTupleType(m),
    );
    if (!candidates.length) return;
    const index = candidates.map((m) => c.getIndexInfoOfType(m, ts.IndexKind.String)).find(Boolean);
    const declared = new Map();
    for (const m of candidates) for (const s of c.getPropertiesOfType(m)) if (!declared.has(s.name)) declared.set(s.name, s);
    if (!declared.size && !index) return; // free-form object
    for (const [k, v] of Object.entries(value)) {
      const s = declared.get(k);
      if (s) this.unknownFields(this.propType(s), v, joinPath(p, k), errs);
      else if (index) this.unknownFields(index.type, v, joinPath(p, k), errs);
      else {
        const allowed = [...declared.keys()];
        errs.push({ path: joinPath(p, k), msg: `unknown field "${k}" (allowed: ${allowed.join(", ")})` });
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Reading stage files.

function collectFiles(paths) {
  const out = [];
  const walk = (d) => {
    for (const ent of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const f = path.join(d, ent.name);
      if (ent.isDirectory()) walk(f);
      else if (/\.(ya?ml|json)$/.test(ent.name)) out.push(f);
    }
  };
  for (const p of paths) {
    let st;
    try {
      st = fs.statSync(p);
    } catch {
      console.error(`crds: no such file or directory: ${p}`);
      process.exit(2);
    }
    if (st.isDirectory()) walk(p);
    else out.push(p);
  }
  return out;
}

function loadDocs(file) {
  // -> [{index, value}] and parse errors
  const text = fs.readFileSync(file, "utf8");
  const docs = parseAllDocuments(text, {
    version: "1.1",
    merge: true,
    uniqueKeys: true,
    prettyErrors: false,
    // go-yaml v2 (under k3s's decoder) has no base-60 numbers and leaves
    // timestamps as strings when decoding into interface{}.
    customTags: (tags) => tags.filter((t) => t.tag !== "tag:yaml.org,2002:timestamp" && t.format !== "TIME"),
  });
  const items = [];
  const errors = [];
  const list = Array.isArray(docs) ? docs : [docs]; // an EmptyStream is not an array
  list.forEach((doc, index) => {
    if (doc.errors?.length) {
      errors.push({ index, msg: doc.errors.map((e) => e.message.split("\n")[0]).join("; ") });
      return;
    }
    items.push({ index, value: doc.toJS({ maxAliasCount: 1000 }) });
  });
  return { items, errors };
}

const describe = (o) => {
  if (!isPlainObject(o)) return "?";
  const m = isPlainObject(o.metadata) ? o.metadata : {};
  const ns = typeof m.namespace === "string" && m.namespace ? `${m.namespace}/` : "";
  return `${typeof o.kind === "string" ? o.kind : "?"}/${ns}${m.name || m.generateName || "?"}`;
};

// ---------------------------------------------------------------------------
// Main.

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

// kube-apiserver's ObjectMeta rules for custom resources: name or generateName
// must be set, and the name must be a DNS-1123 subdomain of at most 253
// characters. Sources: kubernetes/apiextensions-apiserver
// pkg/registry/customresource/validator.go @ 1aa2717a552ee6ca1e2a18f1f8ffccde981db923
// (validation.NameIsDNSSubdomain); kubernetes/apimachinery
// pkg/util/validation/validation.go @ eed236ceee2c19c2753a3d93ac0631dc20750454
// (dns1123SubdomainFmt, DNS1123SubdomainMaxLength = 253).
function metadataRules(o) {
  const errs = [];
  const m = o.metadata;
  if (!isPlainObject(m)) {
    errs.push({ path: ".metadata", msg: "metadata is required" });
    return errs;
  }
  if (typeof m.name === "string" && m.name) {
    if (m.name.length > 253 || !DNS1123_SUBDOMAIN.test(m.name))
      errs.push({ path: ".metadata.name", msg: `"${m.name}" is not a DNS-1123 subdomain (lowercase alphanumerics, "-", ".", at most 253 characters)` });
  } else if (!(typeof m.generateName === "string" && m.generateName)) {
    errs.push({ path: ".metadata.name", msg: "name or generateName is required" });
  }
  return errs;
}

async function main(argv) {
  const args = { quiet: false, helmController: null, helmControllerRaw: null, paths: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-q" || a === "--quiet") args.quiet = true;
    else if (a === "--helm-controller" || a.startsWith("--helm-controller=")) {
      const v = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
      args.helmControllerRaw = v;
      args.helmController = v ? parseVersion(v) : null;
      if (!args.helmController || cmpVersion(args.helmController, [0, 14, 0]) < 0) {
        console.error(`crds: --helm-controller wants a release vX.Y.Z >= v0.14.0, got ${v}`);
        return 2;
      }
    } else if (a === "-h" || a === "--help") {
      console.log("usage: crds.mjs [--quiet] [--helm-controller vX.Y.Z] PATH...");
      return 0;
    } else if (a.startsWith("-")) {
      console.error(`crds: unknown option ${a}`);
      return 2;
    } else args.paths.push(a);
  }
  if (!args.paths.length) {
    console.error("usage: crds.mjs [--quiet] [--helm-controller vX.Y.Z] PATH...");
    return 2;
  }

  // Pass 1: read every document, classify objects.
  const work = []; // {file, index, where, obj, handler, order}
  let failed = 0;
  let skipped = 0;
  // Output lines are collected with a sort key [file, document, item] and
  // printed in file order at the end.
  const out = [];
  let fileNo = 0;
  const emit = (order, line) => out.push({ order, line });
  const report = (order, file, index, where, label, errs) => {
    const seen = new Set();
    for (const e of errs) {
      const line = `FAIL ${file} doc[${index}]${where} ${label}: ${showPath(e.path)}: ${e.msg}`;
      if (!seen.has(line)) emit(order, line);
      seen.add(line);
    }
  };
  const modelCache = new Map();
  const loadModel = async (group, version, kind) => {
    const key = `${group}/${version}/${kind}`;
    if (!modelCache.has(key)) {
      const { pkg } = PACKAGED[group];
      const spec = `${pkg}/${group}/${version}/${kind}`;
      let cls = null;
      if (/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
        try {
          cls = (await import(spec))[kind] ?? null;
        } catch (e) {
          if (!["ERR_MODULE_NOT_FOUND", "ERR_PACKAGE_PATH_NOT_EXPORTED"].includes(e.code)) throw e;
        }
      }
      // only top-level kinds carry static apiVersion/kind (Rule, RuleGroup... do not)
      if (cls && !(cls.kind === kind && cls.apiVersion === `${group}/${version}`)) cls = null;
      modelCache.set(key, cls ? { cls, spec, iface: `I${kind}` } : null);
    }
    return modelCache.get(key);
  };

  for (const file of collectFiles(args.paths)) {
    fileNo++;
    let loaded;
    try {
      loaded = loadDocs(file);
    } catch (e) {
      emit([fileNo, -1, -1], `FAIL ${file}: cannot read: ${e.message}`);
      failed++;
      continue;
    }
    for (const e of loaded.errors) {
      emit([fileNo, e.index, -1], `FAIL ${file} doc[${e.index}]: cannot parse YAML: ${e.msg}`);
      failed++;
    }
    for (const { index, value } of loaded.items) {
      if (value === null || value === undefined) continue;
      let objs = [[value, ""]];
      if (isPlainObject(value) && value.apiVersion === "v1" && value.kind === "List") {
        if (!Array.isArray(value.items)) {
          report([fileNo, index, -1], file, index, "", "List", [{ path: ".items", msg: "must be a list" }]);
          failed++;
          continue;
        }
        objs = value.items.map((it, j) => [it, `.items[${j}]`]);
      }
      for (const [itemNo, [o, where]] of objs.entries()) {
        const label = describe(o);
        const order = [fileNo, index, itemNo];
        if (!isPlainObject(o) || typeof o.apiVersion !== "string" || !o.apiVersion || typeof o.kind !== "string" || !o.kind) {
          report(order, file, index, where, label, [{ path: "", msg: "not an object with non-empty string apiVersion and kind" }]);
          failed++;
          continue;
        }
        if (isBuiltin(o.apiVersion)) {
          skipped++;
          continue;
        }
        const group = apiGroup(o.apiVersion);
        const version = o.apiVersion.slice(o.apiVersion.lastIndexOf("/") + 1);
        let handler = null;
        if (STRUCTURAL[o.apiVersion]?.[o.kind]) handler = { structural: STRUCTURAL[o.apiVersion][o.kind] };
        else if (PACKAGED[group]?.versions.includes(version)) {
          const model = await loadModel(group, version, o.kind);
          if (model) handler = { model };
        }
        if (!handler) {
          report(order, file, index, where, label, [
            {
              path: "",
              msg: `unknown CRD kind ${o.kind} in ${o.apiVersion}: no schema to check it against (add it to scripts/validate/crds.mjs)`,
            },
          ]);
          failed++;
          continue;
        }
        work.push({ file, index, where, obj: o, label, handler, order });
      }
    }
  }

  // Pass 2: load the TypeScript declarations needed, then validate.
  const refs = Object.entries(TYPED).map(([alias, [mod, , iface]]) => [`T_${alias}`, mod, iface]);
  const modelAliases = new Map();
  for (const w of work) {
    const m = w.handler.model;
    if (m && !modelAliases.has(m.spec)) {
      const alias = `M${modelAliases.size}_${m.iface}`;
      modelAliases.set(m.spec, alias);
      refs.push([alias, m.spec, m.iface]);
    }
  }
  const types = new TypeIndex(refs);
  const typedClasses = {};
  for (const [alias, [mod, cls]] of Object.entries(TYPED)) typedClasses[alias] = (await import(mod))[cls];

  const runModel = (cls, tsType, value, p) => {
    const errs = [];
    try {
      new cls(value).validate();
    } catch (e) {
      if (!Array.isArray(e.errors)) throw e;
      for (const ae of e.errors) {
        let msg = ae.message ?? ae.keyword;
        if (ae.keyword === "enum" && ae.params?.allowedValues) msg += `: ${ae.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
        errs.push({ path: ajvPathToJson(ae.instancePath ?? "", p), msg });
      }
    }
    types.unknownFields(tsType, value, p, errs);
    return errs;
  };
  const ctx = {
    helmController: args.helmController,
    helmControllerRaw: args.helmControllerRaw,
    checkTyped: ([mod, cls, iface], value, p) => {
      const alias = Object.keys(TYPED).find((k) => TYPED[k][0] === mod);
      if (!isPlainObject(value)) return [{ path: p, msg: `must be a mapping, got ${typeName(value)}` }];
      return runModel(typedClasses[alias], types.types.get(`T_${alias}`), value, p);
    },
  };

  let ok = 0;
  for (const w of work) {
    const errs = [];
    if (w.handler.structural) {
      const h = w.handler.structural;
      checkNode(h.schema, w.obj, "", ctx, errs);
      if (h.extra) errs.push(...h.extra(w.obj));
    } else {
      const m = w.handler.model;
      errs.push(...runModel(m.cls, types.types.get(modelAliases.get(m.spec)), w.obj, ""));
    }
    errs.push(...metadataRules(w.obj));
    if (errs.length) {
      failed++;
      report(w.order, w.file, w.index, w.where, w.label, errs);
    } else {
      ok++;
      if (!args.quiet) emit(w.order, `ok   ${w.file} doc[${w.index}]${w.where} ${w.label}`);
    }
  }
  const cmpOrder = (a, b) => a.order[0] - b.order[0] || a.order[1] - b.order[1] || a.order[2] - b.order[2];
  for (const { line } of out.sort(cmpOrder)) console.log(line); // Array#sort is stable
  if (!args.quiet || failed)
    console.log(`crds: ${ok} object(s) valid, ${failed} failed, ${skipped} built-in skipped`);
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`crds: internal error: ${e.stack || e}`);
    process.exit(2);
  },
);
