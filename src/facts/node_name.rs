//! The name k3s registers this node under, which is also sightline's Lease
//! identity and the Node it looks itself up by.
//!
//! k3s takes `--node-name` from its flags (`pkg/cli/cmds/agent.go`,
//! `NodeNameFlag`, `EnvVar: "K3S_NODE_NAME"`). Values from config.yaml and
//! its drop-ins are inserted as flags *before* the command line's
//! (`pkg/configfilearg/parser.go`), and urfave/cli applies the environment
//! variable only as the flag's default, so: the command line, then the
//! config files (last wins), then `K3S_NODE_NAME`, then the hostname. The
//! result is lowercased (`pkg/agent/config/config.go`, `getHostnameAndIPs`).

use serde::Serialize;

use super::k3s_config::{self, K3sConfigFiles};
use super::unit_settings::EnvVar;
use crate::sysroot::Sysroot;

/// Where the node name came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum NodeNameSource {
    /// `--node-name` in the unit's ExecStart.
    CommandLine,
    /// `node-name:` in this k3s config file or drop-in.
    ConfigFile {
        /// Host path of the file.
        file: String,
    },
    /// `K3S_NODE_NAME` in the unit's environment.
    Environment {
        /// Where it is set (`Environment=` or an `EnvironmentFile`).
        set_in: String,
    },
    /// The kernel's hostname (or `/etc/hostname`).
    Hostname,
    /// Nothing named the machine.
    Fallback,
}

/// The node's name as k3s spells it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeName {
    /// Lowercased, as k3s registers it.
    pub name: String,
    /// Where it came from.
    pub source: NodeNameSource,
}

/// The variable k3s reads `--node-name` from.
const ENV: &str = "K3S_NODE_NAME";

/// Resolves the name from the unit's argv and environment and k3s's config.
pub fn detect(
    root: &Sysroot,
    argv: &[String],
    env: &[EnvVar],
    config: &K3sConfigFiles,
) -> NodeName {
    let named = |name: String, source| NodeName {
        name: name.to_lowercase(),
        source,
    };
    if let Some(v) = k3s_config::flag_values(argv, "node-name")
        .pop()
        .filter(|v| !v.is_empty())
    {
        return named(v, NodeNameSource::CommandLine);
    }
    if let Some(v) = config
        .values("node-name")
        .pop()
        .filter(|v| !v.value.is_empty())
    {
        return named(v.value, NodeNameSource::ConfigFile { file: v.file });
    }
    if let Some(v) = env
        .iter()
        .rev()
        .find(|v| v.name == ENV && !v.value.is_empty())
    {
        return named(
            v.value.clone(),
            NodeNameSource::Environment {
                set_in: v.set_in.clone(),
            },
        );
    }
    match hostname(root) {
        Some(h) => named(h, NodeNameSource::Hostname),
        None => named("localhost".into(), NodeNameSource::Fallback),
    }
}

/// What `os.Hostname` returns (the kernel's), else `/etc/hostname`, which a
/// test root or a container image may be all there is.
pub fn hostname(root: &Sysroot) -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            root.read_to_string(p).ok().flatten().and_then(|t| {
                t.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(String::from)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::ConfigSource;

    fn root(files: &[(&str, &str)]) -> (tempfile::TempDir, Sysroot) {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let r = Sysroot::new(dir.path());
        (dir, r)
    }

    fn env(value: &str) -> Vec<EnvVar> {
        vec![EnvVar {
            name: ENV.into(),
            value: value.into(),
            set_in: "EnvironmentFile /etc/systemd/system/k3s.service.env".into(),
        }]
    }

    fn config(r: &Sysroot) -> K3sConfigFiles {
        k3s_config::files(r, k3s_config::DEFAULT_CONFIG.into(), ConfigSource::Default)
    }

    #[test]
    fn precedence_is_command_line_then_config_then_environment_then_hostname() {
        let (_d, r) = root(&[
            ("/etc/hostname", "RaspberryPi\n"),
            ("/etc/rancher/k3s/config.yaml", "node-name: from-config\n"),
            (
                "/etc/rancher/k3s/config.yaml.d/50-name.yaml",
                "node-name: From-Dropin\n",
            ),
        ]);
        let argv: Vec<String> = ["/usr/local/bin/k3s", "server", "--node-name", "Cli-Name"]
            .map(String::from)
            .to_vec();
        let cfg = config(&r);
        let n = detect(&r, &argv, &env("env-name"), &cfg);
        assert_eq!(n.name, "cli-name");
        assert_eq!(n.source, NodeNameSource::CommandLine);
        let n = detect(&r, &argv[..2], &env("env-name"), &cfg);
        assert_eq!(n.name, "from-dropin");
        assert_eq!(
            n.source,
            NodeNameSource::ConfigFile {
                file: "/etc/rancher/k3s/config.yaml.d/50-name.yaml".into()
            }
        );
        let (_d2, bare) = root(&[("/etc/hostname", "RaspberryPi\n")]);
        let cfg = config(&bare);
        let n = detect(&bare, &argv[..2], &env("Env-Name"), &cfg);
        assert_eq!(n.name, "env-name");
        assert!(matches!(n.source, NodeNameSource::Environment { .. }));
        let n = detect(&bare, &argv[..2], &[], &cfg);
        assert_eq!(n.name, "raspberrypi");
        assert_eq!(n.source, NodeNameSource::Hostname);
    }

    #[test]
    fn the_kernel_hostname_wins_over_etc_hostname_and_nothing_falls_back() {
        let (_d, r) = root(&[
            ("/etc/hostname", "stale\n"),
            ("/proc/sys/kernel/hostname", "Live\n"),
        ]);
        assert_eq!(detect(&r, &[], &[], &config(&r)).name, "live");
        let (_d, empty) = root(&[]);
        let n = detect(&empty, &[], &[], &config(&empty));
        assert_eq!(
            (n.name.as_str(), n.source),
            ("localhost", NodeNameSource::Fallback)
        );
    }
}
