//! The alert channels and the Grafana LAN: URLs, addresses, keys that only
//! make sense together.

use super::{Problem, problem, valid_cidr};
use crate::config::Config;

pub(super) fn check(c: &Config, out: &mut Vec<Problem>) {
    let a = &c.alerting;
    for (key, url) in [
        ("alerting.ntfy_url", &a.ntfy_url),
        ("alerting.discord_webhook_url", &a.discord_webhook_url),
    ] {
        if let Some(u) = url {
            match reqwest::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {}
                _ => out.push(problem(
                    key,
                    format!("{u:?} is not an http(s) URL"),
                    "give the full URL, e.g. \"https://ntfy.sh/my-topic\"",
                )),
            }
        }
    }
    if a.discord_webhook_url.is_some() && a.discord_webhook_url_file.is_some() {
        out.push(problem(
            "alerting.discord_webhook_url_file",
            "both discord_webhook_url and discord_webhook_url_file are set",
            "keep only discord_webhook_url_file (the URL carries a token)",
        ));
    }
    if a.ntfy_token_file.is_some() && a.ntfy_url.is_none() {
        out.push(problem(
            "alerting.ntfy_token_file",
            "an ntfy token needs alerting.ntfy_url",
            "add ntfy_url = \"https://ntfy.sh/my-topic\"",
        ));
    }
    if let Some(to) = &a.email_to {
        if !to.contains('@') {
            out.push(problem(
                "alerting.email_to",
                format!("{to:?} is not an email address"),
                "give an address such as \"me@example.org\"",
            ));
        }
        if a.smtp_smarthost.is_none() {
            out.push(problem(
                "alerting.email_to",
                "email alerts need alerting.smtp_smarthost",
                "add smtp_smarthost = \"mail.example.org:587\"",
            ));
        }
        if a.smtp_from.is_none() {
            out.push(problem(
                "alerting.email_to",
                "email alerts need alerting.smtp_from",
                "add smtp_from = \"alerts@example.org\"",
            ));
        }
    }
    if let Some(h) = &a.smtp_smarthost {
        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            out.push(problem(
                "alerting.smtp_smarthost",
                format!("{h:?} is not host:port"),
                "write it as \"mail.example.org:587\"",
            ));
        }
    }
    if a.smtp_auth_password_file.is_some() && a.smtp_auth_username.is_none() {
        out.push(problem(
            "alerting.smtp_auth_password_file",
            "a password file needs alerting.smtp_auth_username",
            "add smtp_auth_username",
        ));
    }
    for (i, cidr) in c.grafana.lan_cidrs.iter().enumerate() {
        if !valid_cidr(cidr) {
            out.push(problem(
                "grafana.lan_cidrs",
                format!("entry {i} ({cidr:?}) is not a CIDR"),
                "write networks like \"192.168.1.0/24\"",
            ));
        }
    }
}
