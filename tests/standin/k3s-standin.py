#!/usr/bin/env python3
"""A stand-in for `k3s server`, for sightline's nspawn integration tests.

It behaves like k3s only at the interface sightline touches:

* Configuration: reads /etc/rancher/k3s/config.yaml, then
  /etc/rancher/k3s/config.yaml.d/*.yaml and *.yml in lexical order, merging
  them like k3s does: a plain key in a later file replaces the earlier value,
  `key+:` appends to it. Only the final `kube-apiserver-arg` list matters.
* The apiserver's audit flags: `audit-policy-file=` must name a readable,
  valid audit.k8s.io/v1 Policy and `audit-log-path=` must be in an existing
  directory, or the process exits 1 with an `apiserver exited: ...` line,
  as k3s does when its embedded apiserver dies.
* Serving: HTTPS on 127.0.0.1:6443 with the k3s serving certificate,
  requiring a client certificate signed by the k3s client CA;
  `GET /readyz`, `/livez` and `/healthz` answer 200 `ok`, anything else a
  404 JSON Status.
* systemd: Type=notify; `READY=1` is sent once the listener is up.
* Evidence for tests: one JSON line per start in /var/lib/standin/starts.jsonl:
  {"time", "pid", "ok", "error", "config_files", "kube_apiserver_args",
   "audit_policy_file", "audit_policy_sha256"}. `ok` is true only for a start
  that went on to serve; failed starts are recorded with `ok: false` and the
  error, so "the last ok line" is the configuration k3s is running.
* READY_DELAY_SECONDS (from /etc/default/k3s-standin via the unit's
  EnvironmentFile=) delays serving and READY=1, to test slow starts.
* REJECT_POLICY_CONTAINING (same file) makes it refuse a policy containing
  that text, to test a change the apiserver rejects although sightline's
  own validation accepts it.

Python 3 stdlib + PyYAML only.
"""

import datetime
import glob
import hashlib
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import time

import yaml

CONFIG = "/etc/rancher/k3s/config.yaml"
CONFIG_D = "/etc/rancher/k3s/config.yaml.d"
TLS = "/var/lib/rancher/k3s/server/tls"
STARTS = "/var/lib/standin/starts.jsonl"
ADDRESS = ("127.0.0.1", 6443)

AUDIT_LEVELS = {"None", "Metadata", "Request", "RequestResponse"}
AUDIT_STAGES = {"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"}
POLICY_KEYS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
RULE_KEYS = {
    "level",
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "omitManagedFields",
}
GROUP_RESOURCE_KEYS = {"group", "resources", "resourceNames"}


class Fatal(Exception):
    """A start-up error; the message is what k3s would log before exiting."""


def log(level, msg):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f'time="{now}" level={level} msg={json.dumps(msg)}', file=sys.stderr, flush=True)


def config_files():
    files = [CONFIG] if os.path.isfile(CONFIG) else []
    dropins = glob.glob(os.path.join(CONFIG_D, "*.yaml")) + glob.glob(os.path.join(CONFIG_D, "*.yml"))
    return files + sorted(dropins, key=os.path.basename)


def as_list(value):
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def load_config():
    """Merges the config files like k3s; returns (files, merged dict)."""
    files = config_files()
    merged = {}
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise Fatal(f"failed to load config file {path}: {e}") from e
        if data is None:
            continue
        if not isinstance(data, dict):
            raise Fatal(f"failed to load config file {path}: not a YAML mapping")
        for key, value in data.items():
            key = str(key)
            if key.endswith("+"):
                base = key[:-1]
                merged[base] = as_list(merged.get(base)) + as_list(value)
            else:
                merged[key] = value
    return files, merged


def flag(args, name):
    """The last value of `name=` in an apiserver arg list (later wins), or None."""
    value = None
    for arg in args:
        k, sep, v = arg.lstrip("-").partition("=")
        if sep and k == name:
            value = v
    return value


def validate_policy(policy, path):
    def bad(msg):
        raise Fatal(f"apiserver exited: loading audit policy file: {path}: {msg}")

    if not isinstance(policy, dict):
        bad("not a YAML object")
    unknown = set(policy) - POLICY_KEYS
    if unknown:
        bad(f'strict decoding error: unknown field "{sorted(unknown)[0]}"')
    if policy.get("apiVersion") != "audit.k8s.io/v1":
        bad(f"unsupported apiVersion {policy.get('apiVersion')!r} (want audit.k8s.io/v1)")
    if policy.get("kind") != "Policy":
        bad(f"unsupported kind {policy.get('kind')!r} (want Policy)")
    for stage in policy.get("omitStages") or []:
        if stage not in AUDIT_STAGES:
            bad(f'omitStages: Unsupported value: "{stage}"')
    rules = policy.get("rules")
    if not isinstance(rules, list) or not rules:
        bad("loaded illegal policy with 0 rules")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            bad(f"rules[{i}]: not an object")
        unknown = set(rule) - RULE_KEYS
        if unknown:
            bad(f'strict decoding error: unknown field "rules[{i}].{sorted(unknown)[0]}"')
        if rule.get("level") not in AUDIT_LEVELS:
            bad(f'rules[{i}].level: Unsupported value: "{rule.get("level")}"')
        for stage in rule.get("omitStages") or []:
            if stage not in AUDIT_STAGES:
                bad(f'rules[{i}].omitStages: Unsupported value: "{stage}"')
        for key in ("users", "userGroups", "verbs", "namespaces", "nonResourceURLs", "resources", "omitStages"):
            if key in rule and not isinstance(rule[key], list):
                bad(f"rules[{i}].{key}: must be a list")
        for j, gr in enumerate(rule.get("resources") or []):
            if not isinstance(gr, dict) or set(gr) - GROUP_RESOURCE_KEYS:
                bad(f"rules[{i}].resources[{j}]: invalid GroupResources")
        if rule.get("resources") and rule.get("nonResourceURLs"):
            bad(f"rules[{i}]: rules cannot apply to both regular resources and non-resource URLs")


def load_audit(args):
    """Checks the audit flags like the apiserver; returns (policy path, sha256) or (None, None)."""
    policy_file = flag(args, "audit-policy-file")
    digest = None
    if policy_file is not None:
        try:
            with open(policy_file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise Fatal(
                f'apiserver exited: loading audit policy file: failed to read file path "{policy_file}": {e.strerror}'
            ) from e
        try:
            policy = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            msg = " ".join(str(e).split())
            raise Fatal(f"apiserver exited: loading audit policy file: {policy_file}: not valid YAML: {msg}") from e
        validate_policy(policy, policy_file)
        marker = os.environ.get("REJECT_POLICY_CONTAINING")
        if marker and marker.encode() in raw:
            # Emulates an apiserver that refuses a policy sightline's own
            # validation accepts (a newer field, a version mismatch).
            raise Fatal(f"apiserver exited: loading audit policy file: {policy_file}: rejected by this apiserver (test marker {marker!r})")
        digest = hashlib.sha256(raw).hexdigest()
    log_path = flag(args, "audit-log-path")
    if log_path and log_path != "-":
        try:
            with open(log_path, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise Fatal(f"apiserver exited: ensureLogFile: failed to create log file {log_path}: {e.strerror}") from e
    return policy_file, digest


def record(entry):
    os.makedirs(os.path.dirname(STARTS), exist_ok=True)
    with open(STARTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def notify(state):
    """sd_notify(3) without libsystemd; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "k3s-standin"

    def do_GET(self):
        if self.path.split("?")[0] in ("/readyz", "/livez", "/healthz"):
            self.reply(200, "text/plain; charset=utf-8", b"ok")
            return
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "the server could not find the requested resource",
            "reason": "NotFound",
            "details": {},
            "code": 404,
        }
        self.reply(404, "application/json", json.dumps(status).encode())

    def reply(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        log("info", f"{self.address_string()} {format % args}")


class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, context):
        super().__init__(ADDRESS, Handler)
        # The handshake runs lazily in the handler thread, so a client
        # without a certificate cannot stall the accept loop.
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request, client_address):
        log("info", f"TLS/HTTP error from {client_address[0]}: {sys.exc_info()[1]}")


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(f"{TLS}/serving-kube-apiserver.crt", f"{TLS}/serving-kube-apiserver.key")
        ctx.load_verify_locations(f"{TLS}/client-ca.crt")
    except (OSError, ssl.SSLError) as e:
        raise Fatal(f"apiserver exited: unable to load server certificate: {e}") from e
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    entry = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "pid": os.getpid(),
        "ok": False,
        "error": None,
        "config_files": [],
        "kube_apiserver_args": [],
        "audit_policy_file": None,
        "audit_policy_sha256": None,
    }
    # Like k3s, create the auto-deploy manifests directory at start.
    os.makedirs("/var/lib/rancher/k3s/server/manifests", exist_ok=True)
    try:
        files, config = load_config()
        entry["config_files"] = files
        args = as_list(config.get("kube-apiserver-arg"))
        entry["kube_apiserver_args"] = args
        entry["audit_policy_file"], entry["audit_policy_sha256"] = load_audit(args)
        delay = float(os.environ.get("READY_DELAY_SECONDS") or 0)
        ctx = tls_context()
        if delay > 0:
            log("info", f"READY_DELAY_SECONDS={delay}: waiting before serving")
            time.sleep(delay)
        try:
            server = Server(ctx)
        except OSError as e:
            raise Fatal(f"apiserver exited: listen tcp {ADDRESS[0]}:{ADDRESS[1]}: {e.strerror}") from e
    except Fatal as e:
        entry["error"] = str(e)
        record(entry)
        log("fatal", str(e))
        return 1
    entry["ok"] = True
    record(entry)
    log("info", f"k3s-standin serving on https://{ADDRESS[0]}:{ADDRESS[1]} args={args}")
    notify("READY=1\nSTATUS=serving")
    try:
        server.serve_forever()
    finally:
        notify("STOPPING=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
