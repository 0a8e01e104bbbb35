//! What systemd itself says about a unit: where its file and drop-ins are,
//! what it runs and with which environment. Asking systemd means its own
//! search path, drop-in precedence and specifier expansion apply, with no
//! re-implementation to drift from it.

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use zbus::proxy;
use zbus::proxy::CacheProperties;

use super::SystemdClient;

/// org.freedesktop.systemd1.Manager: unit file listing.
#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait UnitFiles {
    /// Unit files matching shell-style patterns: (path, state).
    fn list_unit_files_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<(String, String)>>;
}

/// org.freedesktop.systemd1.Unit: where the unit comes from.
#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait UnitSource {
    /// `loaded`, `not-found`, `masked`…
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// `active`, `inactive`, `failed`…
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    /// `enabled`, `disabled`, `static`, `linked`…
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    /// The unit file systemd loaded.
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
    /// The drop-ins systemd applied, in order.
    #[zbus(property)]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;
}

/// One ExecStart entry as systemd reports it (`a(sasbttttuii)`): path,
/// argv, ignore-failure, then timestamps and status of the last run.
pub type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

/// org.freedesktop.systemd1.Service: what the service runs.
#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait ServiceCommand {
    /// ExecStart= entries.
    #[zbus(property)]
    fn exec_start(&self) -> zbus::Result<Vec<ExecCommand>>;
    /// Environment= assignments, `NAME=value`.
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
    /// EnvironmentFile= entries: (path, optional).
    #[zbus(property)]
    fn environment_files(&self) -> zbus::Result<Vec<(String, bool)>>;
}

/// One `EnvironmentFile=` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentFile {
    /// Path, specifiers expanded by systemd.
    pub path: String,
    /// The `-` prefix: a missing file is fine.
    pub optional: bool,
}

/// A service unit as systemd describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitInfo {
    /// Unit name.
    pub name: String,
    /// LoadState is `loaded` (not `not-found`, `masked` or `error`).
    pub loaded: bool,
    /// ActiveState is `active`, `activating` or `reloading`.
    pub active: bool,
    /// UnitFileState is `enabled` or `enabled-runtime`.
    pub enabled: bool,
    /// FragmentPath, when there is one.
    pub fragment_path: Option<String>,
    /// DropInPaths.
    pub drop_in_paths: Vec<String>,
    /// argv of the first ExecStart= entry.
    pub exec_start: Vec<String>,
    /// Environment= assignments.
    pub environment: Vec<String>,
    /// EnvironmentFile= entries.
    pub environment_files: Vec<EnvironmentFile>,
}

/// The raw property values a [`UnitInfo`] is made from.
#[derive(Debug, Clone, Default)]
pub struct UnitProperties {
    /// Unit name.
    pub name: String,
    /// LoadState.
    pub load_state: String,
    /// ActiveState.
    pub active_state: String,
    /// UnitFileState.
    pub unit_file_state: String,
    /// FragmentPath (empty when none).
    pub fragment_path: String,
    /// DropInPaths.
    pub drop_in_paths: Vec<String>,
    /// ExecStart.
    pub exec_start: Vec<ExecCommand>,
    /// Environment.
    pub environment: Vec<String>,
    /// EnvironmentFiles.
    pub environment_files: Vec<(String, bool)>,
}

impl From<UnitProperties> for UnitInfo {
    fn from(p: UnitProperties) -> UnitInfo {
        UnitInfo {
            name: p.name,
            loaded: p.load_state == "loaded",
            active: matches!(
                p.active_state.as_str(),
                "active" | "activating" | "reloading"
            ),
            enabled: matches!(p.unit_file_state.as_str(), "enabled" | "enabled-runtime"),
            fragment_path: (!p.fragment_path.is_empty()).then_some(p.fragment_path),
            drop_in_paths: p.drop_in_paths,
            exec_start: p
                .exec_start
                .into_iter()
                .next()
                .map(|(_, argv, ..)| argv)
                .unwrap_or_default(),
            environment: p.environment,
            environment_files: p
                .environment_files
                .into_iter()
                .map(|(path, optional)| EnvironmentFile { path, optional })
                .collect(),
        }
    }
}

/// Units described at once: each sends 8 reads.
const UNITS_AT_ONCE: usize = 4;

impl SystemdClient {
    /// Describes every unit whose file name matches one of `patterns`
    /// (e.g. `k3s-*.service`). Units that fail to load are left out.
    pub async fn unit_infos(&self, patterns: &[&str]) -> Result<Vec<UnitInfo>> {
        let m = UnitFilesProxy::builder(self.connection())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let files = m
            .list_unit_files_by_patterns(&[], patterns)
            .await
            .with_context(|| format!("ListUnitFilesByPatterns {patterns:?}"))?;
        let mut names: Vec<String> = files
            .into_iter()
            .filter_map(|(path, _)| path.rsplit('/').next().map(String::from))
            .collect();
        names.sort();
        names.dedup();
        // Each unit's reads go out at once, and a few units' together: the
        // answers come back in about one round trip to the bus, not one per
        // property of every unit. The cap keeps the calls waiting for an
        // answer well under dbus-daemon's limit per connection
        // (max_replies_per_connection, 128 by default) however many k3s
        // units a machine has.
        futures_util::stream::iter(names.iter().map(|name| async move {
            self.unit_info(name)
                .await
                .with_context(|| format!("describing {name} from systemd"))
        }))
        .buffered(UNITS_AT_ONCE)
        .try_collect()
        .await
    }

    async fn unit_info(&self, name: &str) -> Result<UnitInfo> {
        let path = super::unit_object_path(name)?;
        let u = UnitSourceProxy::builder(self.connection())
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let s = ServiceCommandProxy::builder(self.connection())
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let (
            load_state,
            active_state,
            unit_file_state,
            fragment_path,
            drop_in_paths,
            exec_start,
            environment,
            environment_files,
        ) = tokio::join!(
            u.load_state(),
            u.active_state(),
            u.unit_file_state(),
            u.fragment_path(),
            u.drop_in_paths(),
            s.exec_start(),
            s.environment(),
            s.environment_files(),
        );
        let load_state = load_state?;
        // What a unit runs is asked of every unit with the rest but used
        // only for one that loaded; any other answers an error, or nothing
        // worth reading.
        let (exec_start, environment, environment_files) = if load_state == "loaded" {
            (
                exec_start.context("reading ExecStart")?,
                environment.context("reading Environment")?,
                environment_files.context("reading EnvironmentFiles")?,
            )
        } else {
            Default::default()
        };
        Ok(UnitProperties {
            name: name.to_string(),
            active_state: active_state?,
            unit_file_state: unit_file_state.unwrap_or_default(),
            fragment_path: fragment_path.unwrap_or_default(),
            drop_in_paths: drop_in_paths.unwrap_or_default(),
            load_state,
            exec_start,
            environment,
            environment_files,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_become_a_description() {
        let i = UnitInfo::from(UnitProperties {
            name: "k3s.service".into(),
            load_state: "loaded".into(),
            active_state: "activating".into(),
            unit_file_state: "enabled".into(),
            fragment_path: "/usr/local/lib/systemd/system/k3s.service".into(),
            drop_in_paths: vec!["/etc/systemd/system/k3s.service.d/10-a.conf".into()],
            exec_start: vec![(
                "/usr/local/bin/k3s".into(),
                vec!["/usr/local/bin/k3s".into(), "server".into()],
                false,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            )],
            environment: vec!["K3S_CONFIG_FILE=/srv/k3s.yaml".into()],
            environment_files: vec![("/etc/default/k3s".into(), true)],
        });
        assert!(i.loaded && i.active && i.enabled);
        assert_eq!(i.exec_start, vec!["/usr/local/bin/k3s", "server"]);
        assert_eq!(
            i.fragment_path.as_deref(),
            Some("/usr/local/lib/systemd/system/k3s.service")
        );
        let masked = UnitInfo::from(UnitProperties {
            name: "k3s.service".into(),
            load_state: "masked".into(),
            active_state: "inactive".into(),
            unit_file_state: "masked".into(),
            ..Default::default()
        });
        assert!(!masked.loaded && !masked.active && !masked.enabled);
        assert_eq!(masked.fragment_path, None);
    }
}
