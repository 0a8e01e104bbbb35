//! Uptime Kuma's monitors and notification channels, as AutoKuma static
//! monitor files in a generated Secret, and the admin credentials its setup
//! Job creates the first user with.
//!
//! Why AutoKuma (BigBoot/AutoKuma 2.x, the release line for Uptime Kuma 2.x):
//! it is maintained, ships a container image for amd64 and arm64, reads
//! monitors and notification providers from plain files, and reconciles them
//! idempotently. It owns only what it created: it keeps the Uptime Kuma ids
//! of its entities in its own database (autokuma/src/app_state.rs, a sled db
//! under AUTOKUMA__DATA_PATH) and syncs, updates and deletes those alone
//! (autokuma/src/sync.rs), so the user's own monitors are never overwritten.
//! A Job in the Uptime Kuma image does the one thing AutoKuma cannot: the
//! first-run `setup` call (server/server.js, socket event "setup", refused
//! once a user exists).

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Bundle;
use super::render::StageInputs;
use super::secrets::Secrets;
use crate::config::AlertingConfig;
use crate::decide::{RuntimeSecurity, Tier};

/// Bundle path of the monitor definitions.
pub const MONITORS: &str = "uptime-kuma/monitors.toml";

#[derive(Debug, Deserialize)]
struct File {
    schema: u32,
    monitor: Vec<Monitor>,
}

#[derive(Debug, Deserialize)]
struct Monitor {
    id: String,
    tiers: Vec<Tier>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(flatten)]
    entity: Map<String, Value>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn secret(name: &str, data: Map<String, Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "monitoring",
            "labels": { "app.kubernetes.io/managed-by": "sightline", "app.kubernetes.io/part-of": "sightline" }
        },
        "type": "Opaque",
        "data": data
    })
}

/// Generates `uptime-kuma-admin` or `uptime-kuma-monitors`, or None for another name.
pub fn generate(name: &str, bundle: &Bundle, inputs: &StageInputs<'_>) -> Option<Result<Value>> {
    match name {
        "uptime-kuma-admin" => {
            let mut data = Map::new();
            data.insert("username".into(), json!(b64("admin")));
            data.insert(
                "password".into(),
                json!(b64(&inputs.secrets.uptime_kuma_admin_password)),
            );
            Some(Ok(secret("sightline-uptime-kuma-admin", data)))
        }
        "uptime-kuma-monitors" => Some(monitors(bundle, inputs)),
        _ => None,
    }
}

/// AutoKuma entity files (id -> JSON) for this machine.
pub fn entity_files(bundle: &Bundle, inputs: &StageInputs<'_>) -> Result<Vec<(String, Value)>> {
    let file: File = toml::from_str(bundle.text(MONITORS)?).context(MONITORS)?;
    if file.schema != 1 {
        bail!("{MONITORS}: schema {} is not supported", file.schema);
    }
    let notifications = notifications(&inputs.cfg.alerting, inputs.secrets);
    let names: Vec<&str> = notifications.iter().map(|(id, _)| id.as_str()).collect();
    let mut out: Vec<(String, Value)> = notifications.clone();
    for m in file.monitor {
        let applies = m.tiers.contains(&inputs.tier)
            && m.requires.iter().all(|r| match r.as_str() {
                "falco" => matches!(inputs.runtime_security, RuntimeSecurity::Falco(_)),
                "tetragon" => inputs.runtime_security == RuntimeSecurity::Tetragon,
                _ => false,
            });
        if !applies {
            continue;
        }
        if out.iter().any(|(id, _)| *id == m.id) {
            bail!("{MONITORS}: monitor id {:?} applies twice", m.id);
        }
        let mut e = m.entity;
        e.insert(
            "description".into(),
            json!("Provisioned by sightline (files/bundle/uptime-kuma/monitors.toml)"),
        );
        e.insert("notification_name_list".into(), json!(names));
        out.push((m.id, Value::Object(e)));
    }
    Ok(out)
}

fn monitors(bundle: &Bundle, inputs: &StageInputs<'_>) -> Result<Value> {
    let mut data = Map::new();
    for (id, e) in entity_files(bundle, inputs)? {
        data.insert(
            format!("{id}.json"),
            json!(b64(&serde_json::to_string_pretty(&e)?)),
        );
    }
    Ok(secret("sightline-uptime-kuma-monitors", data))
}

/// Notification providers from `[alerting]`, as AutoKuma `notification`
/// entities. Field names are Uptime Kuma's own
/// (server/notification-providers/{ntfy,discord,smtp}.js).
fn notifications(a: &AlertingConfig, secrets: &Secrets) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(u) = &a.ntfy_url
        && let Ok(url) = reqwest::Url::parse(u)
    {
        let topic = url.path().trim_matches('/').to_string();
        let server = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
            + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
        out.push((
            "ntfy".to_string(),
            json!({ "type": "notification", "name": "ntfy (sightline)", "active": true,
                    "config": { "type": "ntfy", "ntfyserverurl": server, "ntfytopic": topic, "ntfyPriority": 5 } }),
        ));
    }
    if let Some(w) = &secrets.discord_webhook_url {
        out.push((
            "discord".to_string(),
            json!({ "type": "notification", "name": "Discord (sightline)", "active": true,
                    "config": { "type": "discord", "discordWebhookUrl": w } }),
        ));
    }
    if let (Some(to), Some(host), Some(from)) = (&a.email_to, &a.smtp_smarthost, &a.smtp_from) {
        let (h, port) = host
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .unwrap_or((host.clone(), 587));
        let mut config = json!({
            "type": "smtp", "smtpHost": h, "smtpPort": port,
            // Implicit TLS on 465, STARTTLS otherwise (nodemailer's `secure`).
            "smtpSecure": port == 465,
            "smtpFrom": from, "smtpTo": to,
        });
        if let Some(user) = &a.smtp_auth_username {
            config["smtpUsername"] = json!(user);
            config["smtpPassword"] = json!(secrets.smtp_password.as_deref().unwrap_or_default());
        }
        out.push((
            "email".to_string(),
            json!({ "type": "notification", "name": "Email (sightline)", "active": true, "config": config }),
        ));
    }
    out
}
