//! The documents sightline generates itself, as JSON manifests: the Secrets
//! built from its configuration and the NetworkPolicies that depend on it.

use anyhow::{Result, bail};
use base64::Engine;
use serde_json::{Value, json};

use super::alertmanager;
use super::secrets::Secrets;
use crate::config::Config;
use crate::decide::Tier;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn labels() -> Value {
    json!({ "app.kubernetes.io/managed-by": "sightline" })
}

/// Generates one named document for `tier`.
pub fn generate(name: &str, cfg: &Config, secrets: &Secrets, tier: Tier) -> Result<Value> {
    Ok(match name {
        "grafana-admin" => json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": "sightline-grafana-admin", "namespace": "monitoring", "labels": labels() },
            "type": "Opaque",
            "data": {
                "admin-user": b64("admin"),
                "admin-password": b64(&secrets.grafana_admin_password)
            }
        }),
        "alertmanager-config" => json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": "sightline-alertmanager", "namespace": "monitoring", "labels": labels() },
            "type": "Opaque",
            "data": {
                "alertmanager.yaml": b64(&alertmanager::yaml(&cfg.alerting, secrets, tier))
            }
        }),
        // Mounted into the Alertmanager pod by both charts' values
        // (`secrets: [sightline-alertmanager-files]`), so it must exist
        // even when it holds nothing.
        "alertmanager-files" => json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": alertmanager::FILES_SECRET, "namespace": "monitoring", "labels": labels() },
            "type": "Opaque",
            "data": alertmanager::files(secrets, tier)
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(b64(&v))))
                .collect::<serde_json::Map<String, Value>>()
        }),
        "grafana-netpol" => grafana_netpol(cfg),
        "alertmanager-netpol" => alertmanager_netpol(cfg, secrets),
        other => bail!("unknown generated document {other:?}"),
    })
}

fn dns_egress() -> Value {
    json!({
        "to": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
                 "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } } }],
        "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }]
    })
}

/// Grafana: reachable from the ingress controller, from its own namespace
/// (Uptime Kuma checks it) and from the configured LAN networks only.
fn grafana_netpol(cfg: &Config) -> Value {
    let mut from = vec![
        json!({ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
                "podSelector": { "matchLabels": { "app.kubernetes.io/name": "traefik" } } }),
        json!({ "podSelector": {} }),
    ];
    for cidr in &cfg.grafana.lan_cidrs {
        from.push(json!({ "ipBlock": { "cidr": cidr } }));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": "sightline-grafana-ingress", "namespace": "monitoring", "labels": labels() },
        "spec": {
            "podSelector": { "matchLabels": { "app.kubernetes.io/name": "grafana" } },
            "policyTypes": ["Ingress"],
            "ingress": [{ "from": from, "ports": [{ "protocol": "TCP", "port": 3000 }] }]
        }
    })
}

/// Where a URL or host:port goes: an ipBlock (exact for IP literals, any
/// address for names, which NetworkPolicy cannot express) and a port.
fn endpoint(host: &str, port: u16) -> Value {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let blocks: Vec<Value> = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => vec![json!({ "ipBlock": { "cidr": format!("{ip}/32") } })],
        Ok(std::net::IpAddr::V6(ip)) => vec![json!({ "ipBlock": { "cidr": format!("{ip}/128") } })],
        Err(_) => vec![
            json!({ "ipBlock": { "cidr": "0.0.0.0/0" } }),
            json!({ "ipBlock": { "cidr": "::/0" } }),
        ],
    };
    json!({ "to": blocks, "ports": [{ "protocol": "TCP", "port": port }] })
}

/// Alertmanager: egress to DNS and to the configured notification endpoints only.
fn alertmanager_netpol(cfg: &Config, secrets: &Secrets) -> Value {
    let a = &cfg.alerting;
    let mut egress = vec![dns_egress()];
    for u in [&a.ntfy_url, &secrets.discord_webhook_url]
        .into_iter()
        .flatten()
    {
        if let Ok(url) = reqwest::Url::parse(u)
            && let (Some(h), Some(p)) = (url.host_str(), url.port_or_known_default())
        {
            egress.push(endpoint(h, p));
        }
    }
    if let Some(sh) = &a.smtp_smarthost
        && let Some((h, p)) = sh.rsplit_once(':')
        && let Ok(p) = p.parse::<u16>()
    {
        egress.push(endpoint(h, p));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": "sightline-alertmanager-egress", "namespace": "monitoring", "labels": labels() },
        "spec": {
            "podSelector": { "matchExpressions": [{
                "key": "app.kubernetes.io/name", "operator": "In", "values": ["alertmanager", "vmalertmanager"]
            }] },
            "policyTypes": ["Egress"],
            "egress": egress
        }
    })
}
