//! Checks that go beyond types: ranges, paths, URLs, and keys that only make
//! sense together.

use std::net::IpAddr;

use super::model::Config;

mod alerting;
mod paths;

/// One semantic problem, keyed by dotted path so it can be located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path.
    pub key: String,
    /// Another key the problem involves (the other half of a clash): the
    /// error points there when `key` was left at its default.
    pub related: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

fn problem(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        related: None,
        message: message.into(),
        fix: fix.into(),
    }
}

/// All problems in a merged configuration, in a stable order.
pub fn validate(c: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    ranges(c, &mut out);
    k3s(c, &mut out);
    paths::check(c, &mut out);
    alerting::check(c, &mut out);
    out
}

/// Numeric settings and their sane bounds: key, value, low, high, unit.
type Range = (&'static str, u64, u64, u64, &'static str);

fn ranges(c: &Config, out: &mut Vec<Problem>) {
    // One row per setting reads as the table it is.
    #[rustfmt::skip]
    let table: [Range; 20] = [
        ("k3s.api_wait_seconds", c.k3s.api_wait_seconds, 0, 3600, "seconds"),
        ("k3s.ready_timeout_seconds", c.k3s.ready_timeout_seconds, 10, 3600, "seconds"),
        ("audit.max_age_days", c.audit.max_age_days.into(), 1, 3650, "days"),
        ("audit.max_backups", c.audit.max_backups.into(), 1, 1000, "files"),
        ("audit.max_size_mb", c.audit.max_size_mb.into(), 1, 10_000, "MB"),
        ("watchdog.timeout_seconds", c.watchdog.timeout_seconds.into(), 5, 600, "seconds"),
        ("watchdog.reboot_timeout_seconds", c.watchdog.reboot_timeout_seconds.into(), 5, 3600, "seconds"),
        ("throttle.interval_seconds", c.throttle.interval_seconds.into(), 5, 3600, "seconds"),
        ("loki.retention_days", c.loki.retention_days.into(), 7, 30, "days"),
        ("rollout.addon_timeout_seconds", c.rollout.addon_timeout_seconds, 1, 86_400, "seconds"),
        ("rollout.job_timeout_seconds", c.rollout.job_timeout_seconds, 1, 86_400, "seconds"),
        ("rollout.workloads_timeout_seconds", c.rollout.workloads_timeout_seconds, 1, 86_400, "seconds"),
        ("rollout.prune_timeout_seconds", c.rollout.prune_timeout_seconds, 1, 86_400, "seconds"),
        ("rollout.poll_interval_ms", c.rollout.poll_interval_ms, 100, 60_000, "milliseconds"),
        ("daemon.recheck_interval_seconds", c.daemon.recheck_interval_seconds, 10, 86_400, "seconds"),
        ("k3s.lease_duration_seconds", c.k3s.lease_duration_seconds, 1, 86_400, "seconds"),
        ("notify.k3s_down_minutes", c.notify.k3s_down_minutes, 1, 1440, "minutes"),
        ("notify.pipeline_silent_minutes", c.notify.pipeline_silent_minutes, 1, 1440, "minutes"),
        ("notify.repeat_hours", c.notify.repeat_hours, 1, 720, "hours"),
        ("notify.poll_seconds", c.notify.poll_seconds, 1, 600, "seconds"),
    ];
    for (key, v, lo, hi, unit) in table {
        if v < lo || v > hi {
            out.push(problem(
                key,
                format!("{v} is out of range; expected {lo} to {hi} {unit}"),
                format!("set {key} to a value between {lo} and {hi}"),
            ));
        }
    }
}

fn k3s(c: &Config, out: &mut Vec<Problem>) {
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
