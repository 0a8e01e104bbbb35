//! The k3s of this node: its unit wherever it is installed, its role from
//! the command line, the config files k3s really reads and the manifests it
//! is told not to apply.
//!
//! With a bus, the application layer passes what systemd reported for the
//! k3s units ([`UnitInfo`]); without one, the unit files are searched the
//! way systemd searches them ([`super::units`]).

use serde::Serialize;

use super::k3s_config::{self, ConfigValue, K3sConfigFiles};
use super::k3s_manifests::{self, Disable, ManifestRules, SkippedStage};
use super::unit_settings::{self, EnvVar};
use super::units;
use crate::sysroot::Sysroot;
use crate::systemd::UnitInfo;

/// k3s's default data directory for root (`--data-dir`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/k3s";

/// What k3s does on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum K3sRole {
    /// Runs the control plane (and usually workloads).
    Server,
    /// Runs workloads only.
    Agent,
    /// No k3s here.
    None,
}

/// How the role was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    /// The `server`/`agent` subcommand in ExecStart, the word k3s's own
    /// config parser looks for (`configfilearg` `findStart`).
    Subcommand,
    /// No subcommand found (a wrapper script): the install.sh unit name
    /// (`k3s.service` for a server, `k3s-agent.service` for an agent).
    UnitName,
    /// No unit: a server data directory exists.
    DataDir,
}

/// How the unit was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitSource {
    /// systemd reported it over D-Bus.
    Bus,
    /// Searched in the unit search path under the root.
    Files,
}

/// k3s installation facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3s {
    /// Server, agent or none.
    pub role: K3sRole,
    /// How the role was found.
    pub role_from: Option<RoleSource>,
    /// Unit name, e.g. `k3s.service` or `k3s-edge.service`.
    pub unit: Option<String>,
    /// Host path of the unit file (systemd's FragmentPath).
    pub unit_file: Option<String>,
    /// Host paths of its drop-ins (systemd's DropInPaths).
    pub unit_dropins: Vec<String>,
    /// Bus or unit files.
    pub unit_from: Option<UnitSource>,
    /// argv of ExecStart.
    pub exec_start: Vec<String>,
    /// `--kube-apiserver-arg` values on the command line. k3s appends them
    /// after the config files' values (`configfilearg` `Parse`).
    pub cli_apiserver_args: Vec<String>,
    /// The config file and drop-ins k3s reads, and why.
    pub config: K3sConfigFiles,
    /// `--data-dir` (command line or config), else the default.
    pub data_dir: String,
    /// What the deploy controller is told to leave out.
    pub manifests: ManifestRules,
    /// sightline stage files k3s is told to skip, with the reason.
    pub skipped_stages: Vec<SkippedStage>,
    /// Lines of the k3s unit or config files that cannot be read as
    /// written, each naming the file and the fix.
    pub problems: Vec<String>,
    /// The name k3s registers this node under.
    pub node_name: super::NodeName,
}

/// The unit names a k3s install can have: `k3s.service`, `k3s-agent.service`
/// and `k3s-NAME.service` for `INSTALL_K3S_NAME` (install.sh:
/// `SYSTEM_NAME=k3s-${INSTALL_K3S_NAME}`). `k3s-killall.sh` and
/// `k3s-uninstall.sh` are scripts, not units.
pub fn is_k3s_unit_name(name: &str) -> bool {
    name == "k3s.service" || (name.starts_with("k3s-") && name.ends_with(".service"))
}

/// Patterns for systemd's `ListUnitFilesByPatterns`, the same set.
pub const UNIT_PATTERNS: [&str; 2] = ["k3s.service", "k3s-*.service"];

/// One candidate unit, from the bus or the files.
struct Candidate {
    name: String,
    fragment: Option<String>,
    dropins: Vec<String>,
    active: bool,
    enabled: bool,
    settings: unit_settings::ServiceSettings,
    bus_env: Option<Vec<String>>,
    from: UnitSource,
}

impl Candidate {
    fn role(&self) -> Option<(K3sRole, RoleSource)> {
        subcommand_role(&self.settings.exec_start)
            .map(|r| (r, RoleSource::Subcommand))
            .or(match self.name.as_str() {
                "k3s.service" => Some((K3sRole::Server, RoleSource::UnitName)),
                "k3s-agent.service" => Some((K3sRole::Agent, RoleSource::UnitName)),
                _ => None,
            })
    }

    /// Running beats enabled beats installed; a server beats an agent.
    fn rank(&self) -> (bool, bool, bool) {
        (
            self.active,
            self.enabled,
            matches!(self.role(), Some((K3sRole::Server, _))),
        )
    }
}

/// The role from the first `server` or `agent` word after argv\[0\].
pub fn subcommand_role(argv: &[String]) -> Option<K3sRole> {
    argv.iter().skip(1).find_map(|a| match a.as_str() {
        "server" => Some(K3sRole::Server),
        "agent" => Some(K3sRole::Agent),
        _ => None,
    })
}

fn from_files(root: &Sysroot) -> Vec<Candidate> {
    let search = units::SearchPath::read(root);
    search
        .names(is_k3s_unit_name)
        .into_iter()
        .filter_map(|name| search.find(root, &name))
        .map(|u| {
            let mut files = vec![u.fragment.clone()];
            files.extend(u.dropins.iter().cloned());
            Candidate {
                settings: unit_settings::parse(&u.name, &read_all(root, &files)),
                name: u.name,
                fragment: Some(u.fragment),
                dropins: u.dropins,
                active: false,
                enabled: u.enabled,
                bus_env: None,
                from: UnitSource::Files,
            }
        })
        .collect()
}

fn from_bus(infos: &[UnitInfo]) -> Vec<Candidate> {
    infos
        .iter()
        .filter(|i| i.loaded && is_k3s_unit_name(&i.name))
        .map(|i| Candidate {
            name: i.name.clone(),
            fragment: i.fragment_path.clone(),
            dropins: i.drop_in_paths.clone(),
            active: i.active,
            enabled: i.enabled,
            settings: unit_settings::ServiceSettings {
                exec_start: i.exec_start.clone(),
                environment: Vec::new(),
                environment_files: i
                    .environment_files
                    .iter()
                    .map(|f| unit_settings::EnvFile {
                        path: f.path.clone(),
                        optional: f.optional,
                    })
                    .collect(),
                problems: Vec::new(),
            },
            bus_env: Some(i.environment.clone()),
            from: UnitSource::Bus,
        })
        .collect()
}

fn read_all(root: &Sysroot, paths: &[String]) -> Vec<(String, String)> {
    paths
        .iter()
        .map(|p| {
            let text = root.read_to_string(p).ok().flatten().unwrap_or_default();
            (p.clone(), text)
        })
        .collect()
}

/// Detects k3s under `root`. `bus` is what systemd reported for the units
/// matching [`UNIT_PATTERNS`] when a bus is there; `None` searches the
/// unit files instead.
pub fn detect(root: &Sysroot, bus: Option<&[UnitInfo]>) -> K3s {
    let candidates = match bus {
        Some(infos) => from_bus(infos),
        None => from_files(root),
    };
    let chosen = candidates
        .iter()
        .enumerate()
        // Earlier names win ties: k3s.service sorts before k3s-*.service.
        .max_by(|(ia, a), (ib, b)| a.rank().cmp(&b.rank()).then(ib.cmp(ia)))
        .map(|(_, c)| c);
    let (role, role_from) = match chosen.and_then(Candidate::role) {
        Some((r, s)) => (r, Some(s)),
        None if root.path(format!("{DEFAULT_DATA_DIR}/server")).is_dir() => {
            (K3sRole::Server, Some(RoleSource::DataDir))
        }
        None => (K3sRole::None, None),
    };
    let argv = chosen
        .map(|c| c.settings.exec_start.clone())
        .unwrap_or_default();
    let env = chosen.map(|c| environment(root, c)).unwrap_or_default();
    let (file, source) = k3s_config::locate(&env, &argv);
    let config = k3s_config::files(root, file, source);
    let node_name = super::node_name::detect(root, &argv, &env, &config);
    let mut values = config.values_of(&["data-dir", "d", "disable"]);
    let mut take = |k: &str| values.remove(k).unwrap_or_default();
    let (long, short, disable) = (take("data-dir"), take("d"), take("disable"));
    let data_dir = last_value(long, &argv, "data-dir")
        .or_else(|| last_value(short, &argv, "d"))
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    let base = format!("{}/server/manifests", data_dir.trim_end_matches('/'));
    let manifests = ManifestRules::detect(root, &base, disables(disable, &argv));
    let skipped_stages = if role == K3sRole::Server {
        manifests.skipped_stages(root)
    } else {
        Vec::new()
    };
    let mut problems: Vec<String> = chosen
        .map(|c| c.settings.problems.clone())
        .unwrap_or_default();
    problems.extend(config.problems.iter().cloned());
    K3s {
        role,
        role_from,
        unit: chosen.map(|c| c.name.clone()),
        unit_file: chosen.and_then(|c| c.fragment.clone()),
        unit_dropins: chosen.map(|c| c.dropins.clone()).unwrap_or_default(),
        unit_from: chosen.map(|c| c.from),
        cli_apiserver_args: k3s_config::flag_values(&argv, "kube-apiserver-arg"),
        exec_start: argv,
        config,
        data_dir,
        manifests,
        skipped_stages,
        problems,
        node_name,
    }
}

fn environment(root: &Sysroot, c: &Candidate) -> Vec<EnvVar> {
    let unit_file = c.fragment.as_deref().unwrap_or(&c.name);
    match &c.bus_env {
        // systemd has already merged Environment= lines and expanded
        // specifiers; the environment files are still read from disk.
        Some(assignments) => {
            let mut s = c.settings.clone();
            s.environment = assignments
                .iter()
                .filter_map(|a| a.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect();
            unit_settings::environment(root, unit_file, &s)
        }
        None => unit_settings::environment(root, unit_file, &c.settings),
    }
}

/// A scalar flag's effective value: the command line's (appended after the
/// config's, so it wins), else the merged config's last.
fn last_value(mut config: Vec<ConfigValue>, argv: &[String], name: &str) -> Option<String> {
    k3s_config::flag_values(argv, name)
        .pop()
        .or_else(|| config.pop().map(|v| v.value))
        .filter(|v| !v.is_empty())
}

/// The disable list: config values first, then the command line's, as k3s
/// builds its args (`Parse`), each split on commas (`server.go`).
fn disables(config: Vec<ConfigValue>, argv: &[String]) -> Vec<Disable> {
    let mut out: Vec<Disable> = config
        .into_iter()
        .flat_map(|ConfigValue { value, file }| {
            k3s_manifests::split_disable(&value, &format!("disable: in {file}"))
        })
        .collect();
    for v in k3s_config::flag_values(argv, "disable") {
        out.extend(k3s_manifests::split_disable(&v, "the k3s command line"));
    }
    out
}

impl K3s {
    /// Why k3s would not apply the stage file `file_name` written into
    /// `manifests_dir` (both as sightline's config names them); `None` when
    /// k3s applies it. The rollout calls this before waiting on a stage.
    pub fn stage_skip_reason(&self, manifests_dir: &str, file_name: &str) -> Option<String> {
        let path = format!("{}/{file_name}", manifests_dir.trim_end_matches('/'));
        self.manifests
            .skip_reason(&path)
            .map(|r| format!("k3s is told to skip this file: {path}: {r}"))
    }

    /// The host path of the drop-in sightline should write when its setting
    /// is left at the default: the default's file name in the `.d`
    /// directory k3s really reads.
    pub fn dropin_path(&self, default_dropin: &str) -> String {
        let name = default_dropin.rsplit('/').next().unwrap_or(default_dropin);
        format!("{}/{name}", self.config.dropin_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::facts::units::tests::put as write;

    #[test]
    fn named_install_role_comes_from_the_subcommand() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        write(
            d.path(),
            "/etc/systemd/system/k3s-edge.service",
            "[Service]\nExecStart=/usr/local/bin/k3s \\\n    agent \\\n\t'--server' 'https://10.0.0.1:6443'\n",
        );
        let k = detect(&root, None);
        assert_eq!(k.role, K3sRole::Agent);
        assert_eq!(k.role_from, Some(RoleSource::Subcommand));
        assert_eq!(k.unit.as_deref(), Some("k3s-edge.service"));
        // A unit called k3s.service that runs an agent is an agent.
        write(
            d.path(),
            "/etc/systemd/system/k3s.service",
            "[Service]\nExecStart=/usr/local/bin/k3s agent\n",
        );
        std::fs::remove_file(d.path().join("etc/systemd/system/k3s-edge.service")).unwrap();
        assert_eq!(detect(&root, None).role, K3sRole::Agent);
    }

    #[test]
    fn cli_apiserver_args_across_dropins() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        write(
            d.path(),
            "/etc/systemd/system/k3s.service",
            "[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=enable-admission-plugins=NodeRestriction' \\\n\t'--kube-apiserver-arg' 'anonymous-auth=false'\n",
        );
        let k = detect(&root, None);
        assert_eq!(
            k.cli_apiserver_args,
            vec![
                "enable-admission-plugins=NodeRestriction",
                "anonymous-auth=false"
            ]
        );
        write(
            d.path(),
            "/etc/systemd/system/k3s.service.d/10-reset.conf",
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server -c /opt/k3s/config.yaml\n",
        );
        let k = detect(&root, None);
        assert!(k.cli_apiserver_args.is_empty());
        assert_eq!(k.config.file, "/opt/k3s/config.yaml");
        assert_eq!(k.config.dropin_dir, "/opt/k3s/config.yaml.d");
        assert_eq!(
            k.dropin_path("/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml"),
            "/opt/k3s/config.yaml.d/60-sightline-audit.yaml"
        );
    }

    #[test]
    fn the_bus_description_wins_over_files() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        write(d.path(), "/etc/k3s.env", "K3S_CONFIG_FILE=/srv/k3s.yaml\n");
        write(
            d.path(),
            "/srv/k3s.yaml",
            "data-dir: /data/k3s\ndisable: [sightline]\n",
        );
        let info = UnitInfo {
            name: "k3s-main.service".into(),
            loaded: true,
            active: true,
            enabled: true,
            fragment_path: Some("/etc/systemd/system/k3s-main.service".into()),
            drop_in_paths: vec![],
            exec_start: vec!["/usr/local/bin/k3s".into(), "server".into()],
            environment: vec!["A=b".into()],
            environment_files: vec![crate::systemd::EnvironmentFile {
                path: "/etc/k3s.env".into(),
                optional: true,
            }],
        };
        let k = detect(&root, Some(std::slice::from_ref(&info)));
        assert_eq!(k.role, K3sRole::Server);
        assert_eq!(k.unit_from, Some(UnitSource::Bus));
        assert_eq!(k.config.file, "/srv/k3s.yaml");
        assert_eq!(k.data_dir, "/data/k3s");
        let why = k
            .stage_skip_reason(
                "/data/k3s/server/manifests/sightline",
                "sightline-10-a.yaml",
            )
            .unwrap();
        assert!(
            why.contains("--disable sightline (disable: in /srv/k3s.yaml)"),
            "{why}"
        );
        assert_eq!(
            k.stage_skip_reason("/var/lib/rancher/k3s/server/manifests/sightline", "x.yaml"),
            None
        );
    }
}
