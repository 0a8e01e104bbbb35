//! Uptime Kuma's provisioned monitors: each points at a Service the rendered
//! tier really creates, on the port that Service really has; notification
//! channels follow [alerting]. (No Uptime Kuma server runs here: what
//! AutoKuma does with these files is upstream behaviour, see docs/stack.md.)

mod common;
mod stack;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::Value as Json;
use serde_yaml_ng::Value;

/// AutoKuma entity files (id -> entity) of a render.
fn entities(r: &stack::Render) -> BTreeMap<String, Json> {
    let (_, d) = r
        .docs()
        .find(|(_, d)| {
            d["kind"].as_str() == Some("Secret")
                && d["metadata"]["name"].as_str() == Some("sightline-uptime-kuma-monitors")
        })
        .unwrap_or_else(|| panic!("{}: no monitors Secret", r.label));
    d["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (
                k.as_str().unwrap().trim_end_matches(".json").to_string(),
                serde_json::from_slice(&raw).unwrap(),
            )
        })
        .collect()
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |cur, k| cur.as_mapping()?.get(k))
        .filter(|v| !v.is_null())
}

/// Services (namespace, name) -> ports that a render creates: plain
/// manifests as written, Helm releases as their pinned templates render them
/// from the rendered values, and the `kubernetes` Service of the API server.
fn services(r: &stack::Render) -> BTreeMap<(String, String), BTreeSet<u64>> {
    let mut out: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    let mut add = |ns: &str, name: &str, port: u64| {
        out.entry((ns.to_string(), name.to_string()))
            .or_default()
            .insert(port);
    };
    // Created by kube-apiserver itself (kubernetes/kubernetes
    // pkg/controlplane/controller/kubernetesservice), port 443.
    add("default", "kubernetes", 443);
    for (_, d) in r.docs() {
        match d["kind"].as_str() {
            Some("Service") => {
                for p in d["spec"]["ports"].as_sequence().unwrap() {
                    add(
                        d["metadata"]["namespace"].as_str().unwrap(),
                        d["metadata"]["name"].as_str().unwrap(),
                        p["port"].as_u64().unwrap(),
                    );
                }
            }
            Some("HelmChart") => {
                let release = d["metadata"]["name"].as_str().unwrap();
                let ns = d["spec"]["targetNamespace"].as_str().unwrap();
                let v: Value =
                    serde_yaml_ng::from_str(d["spec"]["valuesContent"].as_str().unwrap()).unwrap();
                let num =
                    |p: &str, default: u64| get(&v, p).and_then(Value::as_u64).unwrap_or(default);
                let on =
                    |p: &str, default: bool| get(&v, p).and_then(Value::as_bool).unwrap_or(default);
                match release {
                    // grafana-community/helm-charts charts/loki
                    // templates/single-binary/service.yaml: name
                    // loki.singleBinaryFullname (the release name, which
                    // contains "loki"), port loki.server.http_listen_port
                    // (3100 in the chart's values.yaml).
                    "loki" => add(ns, "loki", num("loki.server.http_listen_port", 3100)),
                    // grafana chart templates/service.yaml: grafana.fullname
                    // = <release>-grafana, port service.port (80).
                    "kube-prometheus-stack" | "victoria-metrics-k8s-stack"
                        if on("grafana.enabled", true) =>
                    {
                        add(
                            ns,
                            &format!("{release}-grafana"),
                            num("grafana.service.port", 80),
                        )
                    }
                    // falcosecurity/charts charts/falco templates/service.yaml:
                    // <fullname>-metrics when metrics.enabled and
                    // metrics.service.create; it forwards to the embedded
                    // webserver, which serves /healthz on its listen_port.
                    "falco"
                        if on("metrics.enabled", false) && on("metrics.service.create", true) =>
                    {
                        let target = num("metrics.service.ports.metrics.targetPort", 8765);
                        assert_eq!(
                            target,
                            num("falco.webserver.listen_port", 8765),
                            "Falco's metrics Service must forward to its webserver port"
                        );
                        add(
                            ns,
                            "falco-metrics",
                            num("metrics.service.ports.metrics.port", 8765),
                        );
                    }
                    // cilium/tetragon install/kubernetes/tetragon/templates/service.yaml:
                    // "tetragon", port 2112, when tetragon.prometheus.enabled.
                    "tetragon" if on("tetragon.prometheus.enabled", true) => {
                        add(ns, "tetragon", 2112)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// (namespace, name, port) a monitor targets.
fn target(e: &Json) -> (String, String, u64) {
    let (host, port) = match e["type"].as_str().unwrap() {
        "http" => {
            let url = reqwest::Url::parse(e["url"].as_str().unwrap()).unwrap();
            (
                url.host_str().unwrap().to_string(),
                u64::from(url.port_or_known_default().unwrap()),
            )
        }
        "port" => (
            e["hostname"].as_str().unwrap().to_string(),
            e["port"].as_u64().unwrap(),
        ),
        other => panic!("monitor type {other} not checked here"),
    };
    let parts: Vec<&str> = host.split('.').collect();
    assert!(
        parts.len() == 5 && parts[2..] == ["svc", "cluster", "local"],
        "{host}: monitors address in-cluster Services by their full name"
    );
    (parts[1].to_string(), parts[0].to_string(), port)
}

fn problems(r: &stack::Render) -> Vec<String> {
    let svcs = services(r);
    let mut out = Vec::new();
    for (id, e) in entities(r) {
        if e["type"] == "notification" {
            continue;
        }
        let (ns, name, port) = target(&e);
        match svcs.get(&(ns.clone(), name.clone())) {
            None => out.push(format!(
                "{}: monitor {id}: no Service {ns}/{name} in this tier",
                r.label
            )),
            Some(ports) if !ports.contains(&port) => out.push(format!(
                "{}: monitor {id}: Service {ns}/{name} has ports {ports:?}, not {port}",
                r.label
            )),
            _ => {}
        }
    }
    out
}

#[test]
fn every_monitor_points_at_a_service_the_tier_creates_on_its_real_port() {
    for r in stack::renders() {
        let p = problems(&r);
        assert!(p.is_empty(), "{}", p.join("\n"));
        // The seed's list: Grafana, Loki, the runtime-security engine, the API server.
        let ids: BTreeSet<String> = entities(&r).into_keys().collect();
        for want in ["grafana", "loki", "kubernetes-api"] {
            assert!(ids.contains(want), "{}: {ids:?}", r.label);
        }
        assert!(
            ids.contains("falco") ^ ids.contains("tetragon"),
            "{}: exactly one runtime-security monitor: {ids:?}",
            r.label
        );
    }
}

#[test]
fn a_values_change_that_moves_a_service_port_is_caught() {
    let root = common::fixture("pi4");
    common::write(
        root.path(),
        "/etc/sightline/values.d/falco.yaml",
        "metrics:\n  service:\n    ports:\n      metrics:\n        port: 9876\n",
    );
    let r = stack::render_root(root.path(), "pi4 + falco port overlay");
    let p = problems(&r);
    assert!(
        p.len() == 1 && p[0].contains("falco-metrics") && p[0].contains("9876"),
        "{p:?}"
    );
}

#[test]
fn notification_channels_follow_alerting_and_attach_to_every_monitor() {
    let root = common::fixture("pi4");
    common::write(
        root.path(),
        "/etc/sightline/config.toml",
        "[alerting]\nntfy_url = \"https://ntfy.example.org/homelab\"\ndiscord_webhook_url = \"https://discord.com/api/webhooks/1/abc\"\nemail_to = \"me@example.org\"\nsmtp_smarthost = \"mail.example.org:465\"\nsmtp_from = \"k3s@example.org\"\nsmtp_auth_username = \"k3s\"\nsmtp_auth_password_file = \"/etc/sightline/smtp-password\"\n",
    );
    common::write(root.path(), "/etc/sightline/smtp-password", "s3cret\n");
    // As an administrator leaves a secret file: others may not read it.
    std::fs::set_permissions(
        root.path().join("etc/sightline/smtp-password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let r = stack::render_root(root.path(), "pi4 + alerting");
    let e = entities(&r);
    assert_eq!(
        e["ntfy"]["config"],
        serde_json::json!({"type": "ntfy", "ntfyserverurl": "https://ntfy.example.org", "ntfytopic": "homelab", "ntfyPriority": 5})
    );
    assert_eq!(
        e["discord"]["config"]["discordWebhookUrl"],
        "https://discord.com/api/webhooks/1/abc"
    );
    let smtp = &e["email"]["config"];
    assert_eq!(
        (
            &smtp["smtpHost"],
            &smtp["smtpPort"],
            &smtp["smtpSecure"],
            &smtp["smtpPassword"]
        ),
        (
            &Json::from("mail.example.org"),
            &Json::from(465),
            &Json::from(true),
            &Json::from("s3cret")
        )
    );
    for (id, m) in &e {
        if m["type"] != "notification" {
            assert_eq!(
                m["notification_name_list"],
                serde_json::json!(["ntfy", "discord", "email"]),
                "{id}"
            );
        }
    }
    // Without [alerting], no channel and nothing attached.
    let plain = stack::render("pi4", "", &[]);
    assert!(entities(&plain).values().all(
        |m| m["type"] != "notification" && m["notification_name_list"] == serde_json::json!([])
    ));
    // The password is only ever in a Secret (the stage file is 0600).
    for (f, d) in r.docs() {
        if d["kind"].as_str() != Some("Secret") {
            assert!(
                !serde_yaml_ng::to_string(d).unwrap().contains("s3cret"),
                "{f}"
            );
        }
    }
}

#[test]
fn the_admin_password_is_generated_once_and_kept() {
    let root = common::fixture("pi4");
    // The cluster pass of `apply` generates and stores it (the k3s API is
    // not there, so it ends pending with exit 3); `render` only reads it.
    let out = common::sightline(root.path(), &["apply", "--no-restart"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stack::render_root(root.path(), "first");
    let again = stack::render_root(root.path(), "again");
    let pw = |r: &stack::Render| {
        r.docs()
            .find(|(_, d)| d["metadata"]["name"].as_str() == Some("sightline-uptime-kuma-admin"))
            .map(|(_, d)| d["data"]["password"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(pw(&first), pw(&again));
    assert_eq!(
        common::mode(
            root.path(),
            "/var/lib/sightline/secrets/uptime-kuma-admin-password"
        ),
        0o600
    );
}
