//! The Alertmanager configuration, built from `[alerting]`.
//!
//! Each configured channel is a receiver. Critical alerts go to every
//! receiver at once; warnings are grouped, deduplicated and repeated at most
//! every 12 hours. A node that is down suppresses the pod alerts on it. With
//! no channel configured, alerts still route (to `default`) so Grafana and
//! Alertmanager show them.

use serde_json::{Value, json};

use crate::config::AlertingConfig;

/// Receiver names, in the order routes list them.
pub fn receiver_names(a: &AlertingConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    if a.ntfy_url.is_some() {
        v.push("ntfy");
    }
    if a.discord_webhook_url.is_some() {
        v.push("discord");
    }
    if a.email_to.is_some() {
        v.push("email");
    }
    v
}

/// Alerts that signal a node is gone.
const NODE_DOWN: &str = "NodeNotReady|KubeNodeNotReady|KubeNodeUnreachable";
/// Alerts about pods, which a down node explains.
const POD_ALERTS: &str = "PodCrashLooping|PodOOMKilled|PodNotReady|KubePod.*|KubeContainer.*";

/// The configuration as a JSON value (Alertmanager reads JSON as YAML).
pub fn config(a: &AlertingConfig, smtp_password: Option<&str>) -> Value {
    let names = receiver_names(a);
    let fan_out = |extra: Value| -> Value {
        let routes: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| json!({ "receiver": n, "continue": i + 1 < names.len() }))
            .collect();
        let mut r = extra;
        if !routes.is_empty() {
            r["routes"] = Value::Array(routes);
        }
        r
    };
    let critical = fan_out(json!({
        "matchers": ["severity=\"critical\""],
        "receiver": "default",
        "group_by": ["alertname", "namespace", "node"],
        "group_wait": "10s",
        "group_interval": "1m",
        "repeat_interval": "4h"
    }));
    let warning = fan_out(json!({
        "matchers": ["severity=\"warning\""],
        "receiver": "default",
        "group_by": ["alertname", "namespace"],
        "group_wait": "2m",
        "group_interval": "15m",
        "repeat_interval": "12h"
    }));
    let mut receivers = vec![json!({ "name": "default" })];
    if let Some(u) = &a.ntfy_url {
        receivers.push(json!({
            "name": "ntfy",
            "webhook_configs": [{ "url": u, "send_resolved": true, "max_alerts": 20 }]
        }));
    }
    if let Some(u) = &a.discord_webhook_url {
        receivers.push(json!({
            "name": "discord",
            "discord_configs": [{ "webhook_url": u, "send_resolved": true }]
        }));
    }
    if let Some(to) = &a.email_to {
        receivers.push(json!({
            "name": "email",
            "email_configs": [{ "to": to, "send_resolved": true }]
        }));
    }
    let mut global = json!({ "resolve_timeout": "5m" });
    if a.email_to.is_some() {
        global["smtp_smarthost"] = json!(a.smtp_smarthost);
        global["smtp_from"] = json!(a.smtp_from);
        global["smtp_require_tls"] = json!(true);
        if let Some(u) = &a.smtp_auth_username {
            global["smtp_auth_username"] = json!(u);
        }
        if let Some(p) = smtp_password {
            global["smtp_auth_password"] = json!(p);
        }
    }
    json!({
        "global": global,
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "namespace"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [
                // Always-firing heartbeat alerts from the charts' default rules.
                { "matchers": ["alertname=~\"Watchdog|InfoInhibitor\""], "receiver": "default" },
                critical,
                warning
            ]
        },
        "inhibit_rules": [
            {
                "source_matchers": [format!("alertname=~\"{NODE_DOWN}\"")],
                "target_matchers": [format!("alertname=~\"{POD_ALERTS}\"")],
                "equal": ["node"]
            },
            {
                "source_matchers": ["severity=\"critical\""],
                "target_matchers": ["severity=\"warning\""],
                "equal": ["alertname", "namespace"]
            }
        ],
        "receivers": receivers
    })
}

/// The configuration as YAML text.
pub fn yaml(a: &AlertingConfig, smtp_password: Option<&str>) -> String {
    serde_yaml_ng::to_string(&config(a, smtp_password)).expect("JSON values serialize as YAML")
}
