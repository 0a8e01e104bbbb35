//! Every configurable path checked against what it may be.
//!
//! The adversarial pass of issue 10 found `state_dir = "/"` (uninstall then
//! removed the root), `state_dir = "/var/lib/rancher"` (k3s's datastore),
//! `k3s_audit_dropin` naming k3s's own `config.yaml`, two settings naming one
//! file (every run rewrote it and restarted k3s) and `log_path` in `/etc`
//! (sightline chmod'ed `/etc` to 0700). Each is refused here, before anything
//! is written.

use std::collections::BTreeMap;

use super::{Problem, problem};
use crate::config::Config;
use crate::facts::K3S_DEFAULT_CONFIG as DEFAULT_CONFIG;
use crate::sysroot::normalize_host_path as normalize;

/// Directories that belong to the operating system: no setting may name one,
/// and the audit log may not live directly in one (the apiserver's log
/// directory gets mode 0700).
pub const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/etc/rancher",
    "/etc/rancher/k3s",
    "/etc/systemd",
    "/etc/systemd/system",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/tmp",
];

/// Directories of k3s and the container runtime. sightline's state (which
/// uninstall removes) must never be one of them or inside one.
pub const K3S_DIRS: &[&str] = &[
    "/var/lib/rancher",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/etc/rancher",
];

/// Whether a setting names a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

pub(super) fn check(c: &Config, out: &mut Vec<Problem>) {
    let settings = settings(c);
    let before = out.len();
    for (key, p, _) in &settings {
        check_abs(out, key, p);
    }
    if out.len() > before {
        // The checks below assume absolute paths.
        return;
    }
    for (key, p, _) in &settings {
        if is_system_dir(p) {
            out.push(problem(
                key,
                format!("{p:?} is a system directory"),
                "give a path of sightline's own, e.g. the default shown by `sightline config`",
            ));
        }
    }
    state_dir(c, out);
    log_path(c, out);
    for (key, p, kind) in &settings {
        if *kind == Kind::File && normalize(p) == DEFAULT_CONFIG {
            out.push(problem(
                key,
                format!("{p:?} is k3s's own config file, which sightline must never replace"),
                "name a file of sightline's, e.g. a drop-in under /etc/rancher/k3s/config.yaml.d/",
            ));
        }
    }
    clashes(&settings, out);
    nesting(c, out);
    suffixes(c, out);
}

/// Files sightline writes for systemd and k3s must not sit in a directory
/// another setting gives a meaning: k3s applies every manifest it finds in
/// the manifests directory, and the state directory holds backups.
fn nesting(c: &Config, out: &mut Vec<Problem>) {
    let files = [
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
        ("audit.log_path", &c.audit.log_path),
    ];
    let dirs = [
        ("paths.state_dir", &c.paths.state_dir),
        ("paths.manifests_dir", &c.paths.manifests_dir),
        ("paths.static_charts_dir", &c.paths.static_charts_dir),
        ("bundle.values_dir", &c.bundle.values_dir),
    ];
    for (fkey, f) in files {
        // A directory that is a system directory is reported as such.
        if let Some((dkey, d)) = dirs
            .iter()
            .find(|(_, d)| !is_system_dir(d) && within(f, &normalize(d)))
        {
            let mut pr = problem(
                fkey,
                format!("{f:?} lies inside {dkey} ({d})"),
                format!("keep {fkey} out of {dkey}"),
            );
            pr.related = Some((*dkey).to_string());
            out.push(pr);
        }
    }
}

/// Every path setting, with what it names.
fn settings(c: &Config) -> Vec<(&'static str, &str, Kind)> {
    let mut v: Vec<(&'static str, &str, Kind)> = vec![
        ("k3s.tls_dir", &c.k3s.tls_dir, Kind::Dir),
        ("audit.log_path", &c.audit.log_path, Kind::File),
        ("throttle.output", &c.throttle.output, Kind::File),
        ("daemon.metrics_file", &c.daemon.metrics_file, Kind::File),
        ("bundle.path", &c.bundle.path, Kind::File),
        ("bundle.values_dir", &c.bundle.values_dir, Kind::Dir),
        ("paths.audit_policy", &c.paths.audit_policy, Kind::File),
        (
            "paths.k3s_audit_dropin",
            &c.paths.k3s_audit_dropin,
            Kind::File,
        ),
        (
            "paths.watchdog_dropin",
            &c.paths.watchdog_dropin,
            Kind::File,
        ),
        (
            "paths.throttle_timer_dropin",
            &c.paths.throttle_timer_dropin,
            Kind::File,
        ),
        (
            "paths.throttle_service_dropin",
            &c.paths.throttle_service_dropin,
            Kind::File,
        ),
        ("paths.state_dir", &c.paths.state_dir, Kind::Dir),
        ("paths.run_dir", &c.paths.run_dir, Kind::Dir),
        ("paths.manifests_dir", &c.paths.manifests_dir, Kind::Dir),
        (
            "paths.static_charts_dir",
            &c.paths.static_charts_dir,
            Kind::Dir,
        ),
    ];
    for (key, p, kind) in [
        ("audit.policy_source", &c.audit.policy_source, Kind::File),
        (
            "bundle.airgap_charts_dir",
            &c.bundle.airgap_charts_dir,
            Kind::Dir,
        ),
        (
            "alerting.smtp_auth_password_file",
            &c.alerting.smtp_auth_password_file,
            Kind::File,
        ),
        (
            "alerting.ntfy_token_file",
            &c.alerting.ntfy_token_file,
            Kind::File,
        ),
        (
            "alerting.discord_webhook_url_file",
            &c.alerting.discord_webhook_url_file,
            Kind::File,
        ),
    ] {
        if let Some(p) = p {
            v.push((key, p, kind));
        }
    }
    v
}

fn check_abs(out: &mut Vec<Problem>, key: &str, p: &str) {
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        out.push(problem(
            key,
            format!("{p:?} is not an absolute path"),
            "give an absolute path without '..'",
        ));
    } else if p.chars().any(|c| c.is_control() || c == '"') {
        // Paths end up in generated YAML and unit drop-ins; a newline or
        // a quote there would add lines of its own.
        out.push(problem(
            key,
            format!("{p:?} contains a control character or a quote"),
            "give a plain path",
        ));
    }
}

/// True when `p` is one of [`SYSTEM_DIRS`].
pub fn is_system_dir(p: &str) -> bool {
    SYSTEM_DIRS.contains(&normalize(p).as_str())
}

/// True when `p` is `dir` or lies under it.
fn within(p: &str, dir: &str) -> bool {
    let p = normalize(p);
    p.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Uninstall removes the state directory, so it must be sightline's alone.
fn state_dir(c: &Config, out: &mut Vec<Problem>) {
    let p = &c.paths.state_dir;
    let key = "paths.state_dir";
    if !within(p, "/var/lib") || normalize(p) == "/var/lib" {
        out.push(problem(
            key,
            format!("{p:?} is not under /var/lib"),
            "use a directory of sightline's own under /var/lib, e.g. \"/var/lib/sightline\"",
        ));
    }
    if let Some(k3s) = K3S_DIRS.iter().find(|d| within(p, d)) {
        out.push(problem(
            key,
            format!("{p:?} is inside {k3s}, which belongs to k3s"),
            "use a directory of sightline's own under /var/lib, e.g. \"/var/lib/sightline\"",
        ));
    }
}

/// The apiserver's log directory is made 0700 when sightline creates it; a
/// system directory must never be it.
fn log_path(c: &Config, out: &mut Vec<Problem>) {
    let dir = c.audit_log_dir();
    if is_system_dir(&dir) {
        out.push(problem(
            "audit.log_path",
            format!(
                "{:?} would put the audit log directly in the system directory {dir}",
                c.audit.log_path
            ),
            "put the log in a directory of its own, e.g. \"/var/log/k3s/audit.log\"",
        ));
    }
}

/// Two settings naming the same path fight: each run rewrites the other's
/// file and restarts k3s.
fn clashes(settings: &[(&'static str, &str, Kind)], out: &mut Vec<Problem>) {
    let mut seen: BTreeMap<String, &'static str> = BTreeMap::new();
    for (key, p, _) in settings {
        match seen.get(&normalize(p)) {
            Some(first) => {
                let mut pr = problem(
                    key,
                    format!("{p:?} is also the value of {first}"),
                    format!("give {key} and {first} different paths"),
                );
                pr.related = Some((*first).to_string());
                out.push(pr);
            }
            None => {
                seen.insert(normalize(p), key);
            }
        }
    }
}

fn suffixes(c: &Config, out: &mut Vec<Problem>) {
    // The output directory goes into the collector unit's ReadWritePaths=,
    // which splits at whitespace and expands %-specifiers.
    let o = &c.throttle.output;
    if o.chars().any(|ch| ch.is_whitespace() || ch == '%') {
        out.push(problem(
            "throttle.output",
            format!("{o:?} contains whitespace or '%', which systemd's ReadWritePaths= would split or expand"),
            "give a path without spaces or '%'",
        ));
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
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;

    fn keys(c: &Config) -> Vec<String> {
        validate(c).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn state_dir_must_be_sightlines_own() {
        for bad in [
            "/",
            "/var/lib",
            "/var/lib/",
            "/var/lib/rancher",
            "/var/lib/rancher/k3s/x",
            "/etc/sightline",
            "/var//lib/.",
        ] {
            let mut c = Config::default();
            c.paths.state_dir = bad.into();
            assert!(
                keys(&c).contains(&"paths.state_dir".to_string()),
                "{bad} accepted"
            );
        }
        let mut c = Config::default();
        c.paths.state_dir = "/var/lib/sightline-test".into();
        assert_eq!(keys(&c), Vec::<String>::new());
    }

    #[test]
    fn no_setting_may_be_a_system_directory() {
        let mut c = Config::default();
        c.bundle.values_dir = "/etc/".into();
        c.paths.run_dir = "/run".into();
        c.paths.static_charts_dir = "/usr".into();
        let p = validate(&c);
        assert_eq!(
            keys(&c),
            [
                "bundle.values_dir",
                "paths.run_dir",
                "paths.static_charts_dir"
            ],
            "{p:?}"
        );
        assert!(p[0].message.contains("system directory"));
    }

    #[test]
    fn managed_files_stay_out_of_meaningful_directories() {
        let mut c = Config::default();
        c.paths.audit_policy = "/var/lib/rancher/k3s/server/manifests/sightline/policy.yaml".into();
        let p = validate(&c);
        assert_eq!(keys(&c), ["paths.audit_policy"], "{p:?}");
        assert_eq!(p[0].related.as_deref(), Some("paths.manifests_dir"));
    }

    #[test]
    fn throttle_output_fits_a_unit_file() {
        let mut c = Config::default();
        c.throttle.output = "/run/my metrics/%n.prom".into();
        assert_eq!(keys(&c), ["throttle.output"]);
    }

    #[test]
    fn paths_cannot_carry_new_lines() {
        let mut c = Config::default();
        c.audit.log_path = "/var/log/k3s/a.log\"\n  - \"x=y".into();
        assert_eq!(keys(&c), ["audit.log_path"]);
    }

    #[test]
    fn k3s_config_yaml_is_never_managed() {
        let mut c = Config::default();
        c.paths.k3s_audit_dropin = "/etc/rancher/k3s//config.yaml".into();
        assert_eq!(keys(&c), ["paths.k3s_audit_dropin"]);
    }

    #[test]
    fn two_settings_naming_one_file_clash() {
        let mut c = Config::default();
        c.paths.k3s_audit_dropin = c.paths.audit_policy.clone();
        let p = validate(&c);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "paths.k3s_audit_dropin");
        assert_eq!(p[0].related.as_deref(), Some("paths.audit_policy"));
    }

    #[test]
    fn log_path_not_directly_in_a_system_directory() {
        let mut c = Config::default();
        c.audit.log_path = "/etc/k3s-audit.log".into();
        assert_eq!(keys(&c), ["audit.log_path"]);
        c.audit.log_path = "/var/log/k3s-audit/audit.log".into();
        assert_eq!(keys(&c), Vec::<String>::new());
    }
}
