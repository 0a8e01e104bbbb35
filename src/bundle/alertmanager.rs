//! The Alertmanager configuration, built from `[alerting]`.
//!
//! Each configured channel is a receiver. Critical alerts go to every
//! receiver at once; warnings are grouped, deduplicated and repeated at most
//! every 12 hours. A node that is down suppresses the pod alerts on it. With
//! no channel configured, alerts still route (to `default`) so Grafana and
//! Alertmanager show them. The always-firing `Watchdog` goes to `null`, a
//! receiver with no integration, as kube-prometheus-stack's default
//! `alertmanager.config` routes it (chart 88.5.3 values.yaml): it exists for
//! sightline's dead man's switch, which reads it through the API.
//!
//! Secrets (the Discord webhook URL, the SMTP password, the ntfy token) are
//! kept out of the configuration where the tier's operator lets Alertmanager
//! read them from files: they go into the Secret [`FILES_SECRET`], which both
//! charts' values mount into the Alertmanager pod (`secrets:`), and the
//! configuration names the files (`*_file` keys, Alertmanager
//! docs/configuration.md). Both tiers ship an Alertmanager that knows every
//! key used here: kube-prometheus-stack 88.5.3 runs v0.34.0
//! (alertmanager.alertmanagerSpec.image.tag), victoria-metrics-k8s-stack
//! 0.91.2 runs v0.32.1 (alertmanager.spec.image.tag); `webhook_url_file` on
//! discord_configs arrived in v0.27.0 (prometheus/alertmanager#3555),
//! `smtp_auth_password_file` in v0.25.0 (#3038), `authorization.credentials_file`
//! earlier still (prometheus/common's HTTP client config).

use serde_json::{Value, json};

use super::secrets::Secrets;
use crate::config::AlertingConfig;
use crate::decide::Tier;

/// The Secret holding the files Alertmanager reads its credentials from.
pub const FILES_SECRET: &str = "sightline-alertmanager-files";

/// Key (file name) of the Discord webhook URL in [`FILES_SECRET`].
pub const DISCORD_WEBHOOK_URL_KEY: &str = "discord-webhook-url";
/// Key of the SMTP password.
pub const SMTP_PASSWORD_KEY: &str = "smtp-auth-password";
/// Key of the ntfy access token.
pub const NTFY_TOKEN_KEY: &str = "ntfy-token";

/// How the tier's operator runs Alertmanager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Runtime {
    /// Where `spec.secrets` mounts [`FILES_SECRET`] in the pod.
    files_dir: &'static str,
    /// Whether the operator passes `discord_configs[].webhook_url_file`
    /// through to Alertmanager.
    discord_url_file: bool,
}

impl Runtime {
    fn of(tier: Tier) -> Runtime {
        match tier {
            // prometheus-operator mounts each of AlertmanagerSpec.secrets at
            // /etc/alertmanager/secrets/<name> (the chart's values.yaml says
            // so at alertmanager.alertmanagerSpec.secrets). It re-reads our
            // config into its own types with yaml.UnmarshalStrict
            // (pkg/alertmanager/amcfg.go, alertmanagerConfigFromBytes), and
            // its discordConfig (pkg/alertmanager/types.go, v0.93.0 and main
            // as of 2026-08) has no webhook_url_file: the key would make it
            // reject the whole configuration. There the URL stays inline, in
            // the configuration Secret, which is no less protected.
            Tier::Full => Runtime {
                files_dir: "/etc/alertmanager/secrets/sightline-alertmanager-files",
                discord_url_file: false,
            },
            // The VM operator mounts each of VMAlertmanager spec.secrets at
            // /etc/vm/secrets/<name> (operator v0.74.1,
            // internal/controller/operator/factory/vmalertmanager/statefulset.go;
            // api/operator/v1beta1/vmextra_types.go SecretsDir) and passes a
            // configSecret through unchanged when no VMAlertmanagerConfig
            // exists (factory/vmalertmanager/config.go, buildConfig).
            Tier::Light => Runtime {
                files_dir: "/etc/vm/secrets/sightline-alertmanager-files",
                discord_url_file: true,
            },
        }
    }

    fn file(&self, key: &str) -> String {
        format!("{}/{key}", self.files_dir)
    }
}

/// The files [`FILES_SECRET`] holds for this tier: key and content. Only
/// what the configuration names; the Secret exists (empty) either way,
/// because the pod mounts it.
pub fn files(secrets: &Secrets, tier: Tier) -> Vec<(&'static str, String)> {
    let rt = Runtime::of(tier);
    let mut out = Vec::new();
    if rt.discord_url_file
        && let Some(u) = &secrets.discord_webhook_url
    {
        out.push((DISCORD_WEBHOOK_URL_KEY, u.clone()));
    }
    if let Some(p) = &secrets.smtp_password {
        out.push((SMTP_PASSWORD_KEY, p.clone()));
    }
    if let Some(t) = &secrets.ntfy_token {
        out.push((NTFY_TOKEN_KEY, t.clone()));
    }
    out
}

/// Alerts that signal a node is gone.
const NODE_DOWN: &str = "NodeNotReady|KubeNodeNotReady|KubeNodeUnreachable";
/// Alerts about pods, which a down node explains.
const POD_ALERTS: &str = "PodCrashLooping|PodOOMKilled|PodNotReady|KubePod.*|KubeContainer.*";

/// The configuration as a JSON value (Alertmanager reads JSON as YAML).
pub fn config(a: &AlertingConfig, secrets: &Secrets, tier: Tier) -> Value {
    let rt = Runtime::of(tier);
    let mut receivers = vec![json!({ "name": "default" }), json!({ "name": "null" })];
    if let Some(u) = &a.ntfy_url {
        let mut webhook = json!({ "url": u, "send_resolved": true, "max_alerts": 20 });
        if secrets.ntfy_token.is_some() {
            webhook["http_config"] = json!({
                "authorization": { "type": "Bearer", "credentials_file": rt.file(NTFY_TOKEN_KEY) }
            });
        }
        receivers.push(json!({ "name": "ntfy", "webhook_configs": [webhook] }));
    }
    if let Some(u) = &secrets.discord_webhook_url {
        let discord = if rt.discord_url_file {
            json!({ "webhook_url_file": rt.file(DISCORD_WEBHOOK_URL_KEY), "send_resolved": true })
        } else {
            json!({ "webhook_url": u, "send_resolved": true })
        };
        receivers.push(json!({ "name": "discord", "discord_configs": [discord] }));
    }
    if let Some(to) = &a.email_to {
        receivers.push(json!({
            "name": "email",
            "email_configs": [{ "to": to, "send_resolved": true }]
        }));
    }
    // Routes name exactly the receivers built above.
    let names: Vec<&str> = receivers[2..]
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
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
    let mut global = json!({ "resolve_timeout": "5m" });
    if a.email_to.is_some() {
        global["smtp_smarthost"] = json!(a.smtp_smarthost);
        global["smtp_from"] = json!(a.smtp_from);
        global["smtp_require_tls"] = json!(a.smtp_require_tls);
        if let Some(u) = &a.smtp_auth_username {
            global["smtp_auth_username"] = json!(u);
        }
        if secrets.smtp_password.is_some() {
            global["smtp_auth_password_file"] = json!(rt.file(SMTP_PASSWORD_KEY));
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
                // Always-firing heartbeats: kube-prometheus-stack's default
                // rules on the full tier, watchdog-alert.yaml on the light one.
                { "matchers": ["alertname=~\"Watchdog|InfoInhibitor\""], "receiver": "null" },
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
pub fn yaml(a: &AlertingConfig, secrets: &Secrets, tier: Tier) -> String {
    serde_yaml_ng::to_string(&config(a, secrets, tier)).expect("JSON values serialize as YAML")
}
