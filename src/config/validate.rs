//! Checks that go beyond types: ranges, paths, URLs, and keys that only make
//! sense together.

use std::net::IpAddr;

use super::model::Config;

/// One semantic problem, keyed by dotted path so it can be located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

fn problem(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// All problems in a merged configuration, in a stable order.
pub fn validate(c: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut range = |key: &str, v: u64, lo: u64, hi: u64, unit: &str| {
        if v < lo || v > hi {
            out.push(problem(
                key,
                format!("{v} is out of range; expected {lo} to {hi} {unit}"),
                format!("set {key} to a value between {lo} and {hi}"),
            ));
        }
    };
    range(
        "k3s.api_wait_seconds",
        c.k3s.api_wait_seconds,
        0,
        3600,
        "seconds",
    );
    range(
        "k3s.ready_timeout_seconds",
        c.k3s.ready_timeout_seconds,
        10,
        3600,
        "seconds",
    );
    range(
        "audit.max_age_days",
        c.audit.max_age_days.into(),
        1,
        3650,
        "days",
    );
    range(
        "audit.max_backups",
        c.audit.max_backups.into(),
        1,
        1000,
        "files",
    );
    range(
        "audit.max_size_mb",
        c.audit.max_size_mb.into(),
        1,
        10_000,
        "MB",
    );
    range(
        "watchdog.timeout_seconds",
        c.watchdog.timeout_seconds.into(),
        1,
        600,
        "seconds",
    );
    range(
        "watchdog.reboot_timeout_seconds",
        c.watchdog.reboot_timeout_seconds.into(),
        1,
        3600,
        "seconds",
    );
    range(
        "throttle.interval_seconds",
        c.throttle.interval_seconds.into(),
        5,
        3600,
        "seconds",
    );
    range(
        "loki.retention_days",
        c.loki.retention_days.into(),
        7,
        30,
        "days",
    );
    range(
        "rollout.addon_timeout_seconds",
        c.rollout.addon_timeout_seconds,
        1,
        86_400,
        "seconds",
    );
    range(
        "rollout.job_timeout_seconds",
        c.rollout.job_timeout_seconds,
        1,
        86_400,
        "seconds",
    );
    range(
        "rollout.workloads_timeout_seconds",
        c.rollout.workloads_timeout_seconds,
        1,
        86_400,
        "seconds",
    );
    range(
        "rollout.prune_timeout_seconds",
        c.rollout.prune_timeout_seconds,
        1,
        86_400,
        "seconds",
    );
    range(
        "rollout.poll_interval_ms",
        c.rollout.poll_interval_ms,
        100,
        60_000,
        "milliseconds",
    );
    range(
        "k3s.lease_duration_seconds",
        c.k3s.lease_duration_seconds,
        1,
        86_400,
        "seconds",
    );
    range(
        "daemon.recheck_interval_seconds",
        c.daemon.recheck_interval_seconds,
        10,
        86_400,
        "seconds",
    );

    for (key, v) in [
        ("notify.k3s_down_minutes", c.notify.k3s_down_minutes),
        (
            "notify.pipeline_silent_minutes",
            c.notify.pipeline_silent_minutes,
        ),
    ] {
        range(key, v, 1, 1440, "minutes");
    }
    range(
        "notify.repeat_hours",
        c.notify.repeat_hours,
        1,
        720,
        "hours",
    );

    if !c.k3s.unit.ends_with(".service") || c.k3s.unit.contains('/') {
        out.push(problem(
            "k3s.unit",
            format!("{:?} is not a service unit name", c.k3s.unit),
            "use a unit name such as \"k3s.service\"",
        ));
    }
    match reqwest::Url::parse(&c.k3s.api_url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        _ => out.push(problem(
            "k3s.api_url",
            format!("{:?} is not an https:// URL", c.k3s.api_url),
            "use the API server address, e.g. \"https://127.0.0.1:6443\"",
        )),
    }

    let paths: [(&str, &str); 15] = [
        ("k3s.tls_dir", &c.k3s.tls_dir),
        ("audit.log_path", &c.audit.log_path),
        ("throttle.output", &c.throttle.output),
        ("daemon.metrics_file", &c.daemon.metrics_file),
        ("bundle.path", &c.bundle.path),
        ("bundle.values_dir", &c.bundle.values_dir),
        ("paths.audit_policy", &c.paths.audit_policy),
        ("paths.k3s_audit_dropin", &c.paths.k3s_audit_dropin),
        ("paths.watchdog_dropin", &c.paths.watchdog_dropin),
        (
            "paths.throttle_timer_dropin",
            &c.paths.throttle_timer_dropin,
        ),
        (
            "paths.throttle_service_dropin",
            &c.paths.throttle_service_dropin,
        ),
        ("paths.state_dir", &c.paths.state_dir),
        ("paths.run_dir", &c.paths.run_dir),
        ("paths.manifests_dir", &c.paths.manifests_dir),
        ("paths.static_charts_dir", &c.paths.static_charts_dir),
    ];
    for (key, p) in paths {
        check_abs(&mut out, key, p);
    }
    for (key, p) in [
        ("audit.policy_source", &c.audit.policy_source),
        ("bundle.airgap_charts_dir", &c.bundle.airgap_charts_dir),
        (
            "alerting.smtp_auth_password_file",
            &c.alerting.smtp_auth_password_file,
        ),
        ("alerting.ntfy_token_file", &c.alerting.ntfy_token_file),
        (
            "alerting.discord_webhook_url_file",
            &c.alerting.discord_webhook_url_file,
        ),
    ] {
        if let Some(p) = p {
            check_abs(&mut out, key, p);
        }
    }
    for (key, p) in [
        ("throttle.output", &c.throttle.output),
        ("daemon.metrics_file", &c.daemon.metrics_file),
    ] {
        if !p.ends_with(".prom") {
            out.push(problem(
                key,
                format!("{p:?} does not end in .prom, so node_exporter's textfile collector would ignore it"),
                "name the file *.prom",
            ));
        }
    }
    if !c.paths.k3s_audit_dropin.ends_with(".yaml") {
        out.push(problem(
            "paths.k3s_audit_dropin",
            "k3s only reads config.yaml.d files ending in .yaml",
            "name the drop-in *.yaml",
        ));
    }
    if !c.paths.manifests_dir.contains("/server/manifests") {
        out.push(problem(
            "paths.manifests_dir",
            "must be inside k3s's server manifests directory for the deploy controller to apply it",
            "use a directory under /var/lib/rancher/k3s/server/manifests (or your --data-dir equivalent)",
        ));
    }

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
    out
}

fn check_abs(out: &mut Vec<Problem>, key: &str, p: &str) {
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        out.push(problem(
            key,
            format!("{p:?} is not an absolute path"),
            "give an absolute path without '..'",
        ));
    }
}

/// True for `a.b.c.d/n` or an IPv6 network with a valid prefix length.
pub fn valid_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    len <= if ip.is_ipv4() { 32 } else { 128 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&Config::default()), vec![]);
    }

    #[test]
    fn email_needs_smtp() {
        let mut c = Config::default();
        c.alerting.email_to = Some("me@example.org".into());
        let p = validate(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.key == "alerting.email_to"));
    }

    #[test]
    fn cidrs() {
        assert!(valid_cidr("192.168.1.0/24"));
        assert!(valid_cidr("fd00::/8"));
        assert!(!valid_cidr("192.168.1.0/33"));
        assert!(!valid_cidr("lan"));
    }

    #[test]
    fn prom_suffix_required() {
        let mut c = Config::default();
        c.throttle.output = "/run/node_exporter/textfile_collector/rpi.txt".into();
        assert_eq!(validate(&c)[0].key, "throttle.output");
    }
}
