//! The configuration schema. Every key is optional in every file; the
//! defaults below are what a node gets with no configuration at all.

use serde::{Deserialize, Serialize};

/// Which stack tier to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TierChoice {
    /// Decide from measured memory (and keep the decision).
    #[default]
    Auto,
    /// kube-prometheus-stack, Alloy, Tetragon/Falco, Trivy, Kubescape, kube-bench.
    Full,
    /// VictoriaMetrics, Fluent Bit, Falco, Trivy, kube-bench.
    Light,
}

/// Which runtime-security engine to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeSecurityChoice {
    /// Tetragon on Cilium + full tier + BTF, else Falco.
    #[default]
    Auto,
    /// Force Tetragon.
    Tetragon,
    /// Force Falco.
    Falco,
    /// No runtime security.
    None,
}

/// Whether to install the static NetworkPolicies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicyChoice {
    /// On, except on Cilium (whose ipBlock rules do not match node IPs by default).
    #[default]
    Auto,
    /// Always.
    On,
    /// Never (the generated Grafana and Alertmanager policies still apply).
    Off,
}

/// Keys that are unset by default (`section.key`): they do not appear when
/// the defaults are serialized, so listings name them explicitly.
pub const OPTIONAL_KEYS: [&str; 12] = [
    "audit.policy_source",
    "alerting.ntfy_url",
    "alerting.ntfy_token_file",
    "alerting.discord_webhook_url",
    "alerting.discord_webhook_url_file",
    "alerting.email_to",
    "alerting.smtp_smarthost",
    "alerting.smtp_from",
    "alerting.smtp_auth_username",
    "alerting.smtp_auth_password_file",
    "bundle.airgap_charts_dir",
    "notify.enabled",
];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `auto`, `full` or `light`.
    pub tier: TierChoice,
    /// `auto`, `tetragon`, `falco` or `none`.
    pub runtime_security: RuntimeSecurityChoice,
    /// How to reach and restart k3s.
    pub k3s: K3sConfig,
    /// The k3s API audit log.
    pub audit: AuditConfig,
    /// The hardware watchdog.
    pub watchdog: WatchdogConfig,
    /// The Raspberry Pi throttle collector.
    pub throttle: ThrottleConfig,
    /// Where alerts go.
    pub alerting: AlertingConfig,
    /// Grafana exposure.
    pub grafana: GrafanaConfig,
    /// Loki retention.
    pub loki: LokiConfig,
    /// The in-cluster bundle.
    pub bundle: BundleConfig,
    /// Health-gate timeouts for the staged rollout.
    pub rollout: RolloutConfig,
    /// The long-running daemon.
    pub daemon: DaemonConfig,
    /// sightline's own notifications (when the cluster cannot alert).
    pub notify: NotifyConfig,
    /// Every path sightline writes.
    pub paths: PathsConfig,
}

/// `[k3s]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K3sConfig {
    /// The k3s server unit restarted after an audit change. Unset, it
    /// follows the detected unit ([`LoadedConfig::follow_k3s`](super::LoadedConfig::follow_k3s)).
    pub unit: String,
    /// The API server URL used for readiness and the rollout.
    pub api_url: String,
    /// How long `apply` waits for an unreachable API before leaving the cluster stages pending.
    pub api_wait_seconds: u64,
    /// How long a restarted k3s has to answer /readyz before sightline rolls back.
    pub ready_timeout_seconds: u64,
    /// Whether sightline may restart k3s at all. When false, restarts are listed as pending.
    pub allow_restart: bool,
    /// Directory holding server-ca.crt and client-admin.{crt,key}.
    pub tls_dir: String,
    /// How long the Lease `kube-system/sightline` names its holder after its
    /// last renewal; another server takes over once it has passed.
    pub lease_duration_seconds: u64,
}

impl Default for K3sConfig {
    fn default() -> Self {
        K3sConfig {
            unit: "k3s.service".into(),
            api_url: "https://127.0.0.1:6443".into(),
            api_wait_seconds: 120,
            ready_timeout_seconds: 300,
            allow_restart: true,
            tls_dir: "/var/lib/rancher/k3s/server/tls".into(),
            lease_duration_seconds: 600,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Enable the k3s API audit log on server nodes.
    pub enabled: bool,
    /// Where the apiserver writes the audit log.
    pub log_path: String,
    /// `audit-log-maxage`, days.
    pub max_age_days: u32,
    /// `audit-log-maxbackup`, files.
    pub max_backups: u32,
    /// `audit-log-maxsize`, megabytes.
    pub max_size_mb: u32,
    /// A custom policy to install instead of the built-in one (host path).
    pub policy_source: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            log_path: "/var/log/k3s/audit.log".into(),
            max_age_days: 30,
            max_backups: 10,
            max_size_mb: 100,
            policy_source: None,
        }
    }
}

/// `[watchdog]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// Arm the hardware watchdog where a device exists.
    pub enabled: bool,
    /// Requested RuntimeWatchdogSec; clamped below the device maximum.
    pub timeout_seconds: u32,
    /// Requested RebootWatchdogSec; clamped the same way.
    pub reboot_timeout_seconds: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            enabled: true,
            timeout_seconds: 30,
            reboot_timeout_seconds: 120,
        }
    }
}

/// `[throttle]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Install the collector timer where a throttle source exists.
    pub enabled: bool,
    /// How often the timer runs the collector.
    pub interval_seconds: u32,
    /// The textfile the collector writes.
    pub output: String,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: true,
            interval_seconds: 60,
            output: "/run/node_exporter/textfile_collector/rpi_throttle.prom".into(),
        }
    }
}

/// `[alerting]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// ntfy topic URL; Alertmanager posts its webhook payload there.
    pub ntfy_url: Option<String>,
    /// Host path of a file holding an ntfy access token (sent as `Authorization: Bearer`).
    pub ntfy_token_file: Option<String>,
    /// Discord webhook URL (it carries a token: prefer `discord_webhook_url_file`).
    pub discord_webhook_url: Option<String>,
    /// Host path of a file holding the Discord webhook URL.
    pub discord_webhook_url_file: Option<String>,
    /// Email recipient.
    pub email_to: Option<String>,
    /// SMTP relay, `host:port`.
    pub smtp_smarthost: Option<String>,
    /// Sender address.
    pub smtp_from: Option<String>,
    /// SMTP user name, when the relay wants authentication.
    pub smtp_auth_username: Option<String>,
    /// Host path of a file holding the SMTP password (never put the password itself here).
    pub smtp_auth_password_file: Option<String>,
    /// Refuse to send mail unless the relay offers STARTTLS (as Alertmanager's default).
    pub smtp_require_tls: bool,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            ntfy_url: None,
            ntfy_token_file: None,
            discord_webhook_url: None,
            discord_webhook_url_file: None,
            email_to: None,
            smtp_smarthost: None,
            smtp_from: None,
            smtp_auth_username: None,
            smtp_auth_password_file: None,
            smtp_require_tls: true,
        }
    }
}

/// Webhook URLs carry their token in the path: never print them.
impl std::fmt::Debug for AlertingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AlertingConfig")
            .field("ntfy_url", &hide(&self.ntfy_url))
            .field("ntfy_token_file", &self.ntfy_token_file)
            .field("discord_webhook_url", &hide(&self.discord_webhook_url))
            .field("discord_webhook_url_file", &self.discord_webhook_url_file)
            .field("email_to", &self.email_to)
            .field("smtp_smarthost", &self.smtp_smarthost)
            .field("smtp_from", &self.smtp_from)
            .field("smtp_auth_username", &self.smtp_auth_username)
            .field("smtp_auth_password_file", &self.smtp_auth_password_file)
            .field("smtp_require_tls", &self.smtp_require_tls)
            .finish()
    }
}

/// `[notify]`: sightline's own notifications, sent from the host through
/// the `[alerting]` channels when the in-cluster pipeline cannot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// On or off; unset means on when any `[alerting]` channel is set.
    pub enabled: Option<bool>,
    /// k3s not active or not ready for this long is an event.
    pub k3s_down_minutes: u64,
    /// Alertmanager's always-firing Watchdog alert unseen for this long is an event.
    pub pipeline_silent_minutes: u64,
    /// An event that lasts is sent again at most this often.
    pub repeat_hours: u64,
    /// How often the daemon looks (k3s, the pipeline, stages).
    pub poll_seconds: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: None,
            k3s_down_minutes: 3,
            pipeline_silent_minutes: 15,
            repeat_hours: 12,
            poll_seconds: 30,
        }
    }
}

/// `[grafana]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GrafanaConfig {
    /// LAN CIDRs allowed to reach Grafana directly, besides the ingress controller.
    pub lan_cidrs: Vec<String>,
    /// grafana.com dashboards 1860 and 16450, downloaded by Grafana at start:
    /// `auto` (on unless `bundle.airgap_charts_dir` is set), `on` or `off`.
    pub extra_dashboards: ExtraDashboardsChoice,
}

/// `auto`, `on` or `off` for the grafana.com extra dashboards (same words as
/// the NetworkPolicy switch).
pub type ExtraDashboardsChoice = NetworkPolicyChoice;

/// `[loki]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiConfig {
    /// Log retention, 7 to 30 days.
    pub retention_days: u32,
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig { retention_days: 14 }
    }
}

/// `[bundle]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleConfig {
    /// The bundle archive; when absent, the copy built into the binary is used.
    pub path: String,
    /// Directory of chart .tgz files for air-gapped nodes.
    pub airgap_charts_dir: Option<String>,
    /// Your own Helm values, `<release>.yaml`, merged over the bundle's.
    pub values_dir: String,
}

impl Default for BundleConfig {
    fn default() -> Self {
        BundleConfig {
            path: "/usr/share/sightline/bundle.tar".into(),
            airgap_charts_dir: None,
            values_dir: "/etc/sightline/values.d".into(),
        }
    }
}

/// `[rollout]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// How long k3s may take to apply a stage file (Addon checksum matches).
    pub addon_timeout_seconds: u64,
    /// How long a HelmChart install job may take.
    pub job_timeout_seconds: u64,
    /// How long the stage's workloads may take to become ready.
    pub workloads_timeout_seconds: u64,
    /// How long pruning a removed stage may take.
    pub prune_timeout_seconds: u64,
    /// How often the gates are polled.
    pub poll_interval_ms: u64,
    /// `auto`, `on` or `off`: the per-component NetworkPolicies.
    pub network_policies: NetworkPolicyChoice,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            addon_timeout_seconds: 120,
            job_timeout_seconds: 900,
            workloads_timeout_seconds: 900,
            prune_timeout_seconds: 600,
            poll_interval_ms: 2000,
            network_policies: NetworkPolicyChoice::Auto,
        }
    }
}

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Full re-check interval.
    pub recheck_interval_seconds: u64,
    /// sightline's own metrics, as a node_exporter textfile.
    pub metrics_file: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            recheck_interval_seconds: 300,
            metrics_file: "/run/node_exporter/textfile_collector/sightline.prom".into(),
        }
    }
}

/// `[paths]`: every path sightline writes, as host paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// The audit policy k3s loads.
    pub audit_policy: String,
    /// The k3s config drop-in carrying the apiserver audit flags. Unset, it
    /// goes into the `.d` directory of the config file k3s reads
    /// ([`LoadedConfig::follow_k3s`](super::LoadedConfig::follow_k3s)).
    pub k3s_audit_dropin: String,
    /// The systemd manager drop-in arming the watchdog.
    pub watchdog_dropin: String,
    /// The drop-in setting the throttle timer's interval.
    pub throttle_timer_dropin: String,
    /// The drop-in letting the throttle collector write its output directory.
    pub throttle_service_dropin: String,
    /// State, backups and the restart journal.
    pub state_dir: String,
    /// Lock and status.
    pub run_dir: String,
    /// Where stage files go for k3s's deploy controller.
    pub manifests_dir: String,
    /// Where air-gapped charts are copied for k3s to serve.
    pub static_charts_dir: String,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            audit_policy: "/etc/rancher/k3s/audit-policy.yaml".into(),
            k3s_audit_dropin: "/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml".into(),
            watchdog_dropin: "/etc/systemd/system.conf.d/60-sightline-watchdog.conf".into(),
            throttle_timer_dropin:
                "/etc/systemd/system/sightline-throttle.timer.d/60-sightline.conf".into(),
            throttle_service_dropin:
                "/etc/systemd/system/sightline-throttle.service.d/60-sightline.conf".into(),
            state_dir: "/var/lib/sightline".into(),
            run_dir: "/run/sightline".into(),
            manifests_dir: "/var/lib/rancher/k3s/server/manifests/sightline".into(),
            static_charts_dir: "/var/lib/rancher/k3s/server/static/charts".into(),
        }
    }
}

impl Config {
    /// The lock shared by every sightline process.
    pub fn lock_path(&self) -> String {
        format!("{}/lock", self.paths.run_dir)
    }

    /// The directory the apiserver writes the audit log into.
    pub fn audit_log_dir(&self) -> String {
        std::path::Path::new(&self.audit.log_path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into())
    }

    /// True when at least one alert channel is configured.
    pub fn has_alert_channel(&self) -> bool {
        let a = &self.alerting;
        a.ntfy_url.is_some()
            || a.discord_webhook_url.is_some()
            || a.discord_webhook_url_file.is_some()
            || a.email_to.is_some()
    }

    /// Whether sightline sends its own notifications: `[notify] enabled`,
    /// or, when unset, whether any channel is configured.
    pub fn notify_enabled(&self) -> bool {
        self.notify
            .enabled
            .unwrap_or_else(|| self.has_alert_channel())
    }
}
