//! Which k3s config file and drop-ins k3s reads, and their merged values,
//! exactly as k3s's own parser does it (k3s `pkg/configfilearg/parser.go`,
//! `defaultparser.go`, `pkg/cli/cmds/config.go`).

use serde::Serialize;
use serde_yaml_ng::Value;

use super::unit_settings::EnvVar;
use crate::sysroot::Sysroot;

/// k3s's built-in config file (`defaultparser.go`: `DefaultConfig`).
pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

/// The environment variable k3s reads ahead of `--config`
/// (`defaultparser.go`: `EnvName: version.ProgramUpper + "_CONFIG_FILE"`).
pub const CONFIG_ENV: &str = "K3S_CONFIG_FILE";

/// The flags naming the config file (`defaultparser.go`: `ConfigFlags`).
const CONFIG_FLAGS: [&str; 2] = ["--config", "-c"];

/// Why k3s reads the config file it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConfigSource {
    /// `K3S_CONFIG_FILE` in the service environment; it wins over the
    /// command line (`findConfigFileFlag` checks it first).
    Environment {
        /// The unit line or environment file that set it.
        set_in: String,
    },
    /// `--config FILE`, `--config=FILE`, `-c FILE` or `-c=FILE` in ExecStart.
    CommandLine {
        /// The flag as written.
        flag: String,
    },
    /// Neither: k3s's default.
    Default,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Environment { set_in } => write!(f, "{CONFIG_ENV} from {set_in}"),
            ConfigSource::CommandLine { flag } => write!(f, "{flag} on the k3s command line"),
            ConfigSource::Default => write!(f, "k3s's default"),
        }
    }
}

/// The k3s configuration files of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct K3sConfigFiles {
    /// Host path of the main config file.
    pub file: String,
    /// Why this file.
    pub source: ConfigSource,
    /// The main file exists.
    pub exists: bool,
    /// `<file>.d`: where k3s looks for drop-ins.
    pub dropin_dir: String,
    /// Drop-ins k3s reads, in its order.
    pub dropins: Vec<String>,
    /// Files k3s would refuse, naming file and fix.
    pub problems: Vec<String>,
    /// Each readable file's mapping, in k3s's order: parsed once while
    /// checking the files, so asking for values reads nothing again.
    #[serde(skip)]
    parsed: Vec<(String, serde_yaml_ng::Mapping)>,
}

impl Default for K3sConfigFiles {
    fn default() -> Self {
        K3sConfigFiles {
            file: DEFAULT_CONFIG.into(),
            source: ConfigSource::Default,
            exists: false,
            dropin_dir: format!("{DEFAULT_CONFIG}.d"),
            dropins: Vec::new(),
            problems: Vec::new(),
            parsed: Vec::new(),
        }
    }
}

/// One value of a merged key and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigValue {
    /// The value as k3s turns it into a flag argument.
    pub value: String,
    /// Host path of the file.
    pub file: String,
}

/// The config file k3s uses given its environment and argv
/// (`findConfigFileFlag`): the environment variable, else the first
/// `--config`/`-c` anywhere in argv, else the default. A `--config` with no
/// value after it makes k3s fail later; it is reported as the default here.
pub fn locate(env: &[EnvVar], argv: &[String]) -> (String, ConfigSource) {
    if let Some(v) = env
        .iter()
        .find(|v| v.name == CONFIG_ENV && !v.value.is_empty())
    {
        return (
            absolute(&v.value),
            ConfigSource::Environment {
                set_in: v.set_in.clone(),
            },
        );
    }
    for (i, arg) in argv.iter().enumerate() {
        for flag in CONFIG_FLAGS {
            if arg == flag {
                if let Some(v) = argv.get(i + 1) {
                    return (
                        absolute(v),
                        ConfigSource::CommandLine {
                            flag: format!("{flag} {v}"),
                        },
                    );
                }
                return (DEFAULT_CONFIG.into(), ConfigSource::Default);
            } else if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
                return (absolute(v), ConfigSource::CommandLine { flag: arg.clone() });
            }
        }
    }
    (DEFAULT_CONFIG.into(), ConfigSource::Default)
}

/// systemd starts services in `/`, so a relative path is relative to it.
fn absolute(p: &str) -> String {
    if p.starts_with('/') || p.contains("://") {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// Reads the file set: the main file (when present), then `dotDFiles`: the
/// entries of `<file>.d` in name order (`os.ReadDir` sorts), not
/// directories, ending in `.yaml` or `.yml` in any case (`util.HasSuffixI`).
pub fn files(root: &Sysroot, file: String, source: ConfigSource) -> K3sConfigFiles {
    let dropin_dir = format!("{file}.d");
    let exists = root.path(&file).is_file();
    let dropins = dotd_files(root, &dropin_dir);
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for f in std::iter::once(&file).filter(|_| exists).chain(&dropins) {
        match read_yaml(root, f) {
            Ok(Some(map)) => parsed.push((f.clone(), map)),
            Ok(None) => {}
            Err(e) => problems.push(format!(
                "{f}: {e}; k3s will not start until this file is valid YAML"
            )),
        }
    }
    K3sConfigFiles {
        file,
        source,
        exists,
        dropin_dir,
        dropins,
        problems,
        parsed,
    }
}

/// The drop-ins k3s reads from a `.d` directory, as host paths, in order.
pub fn dotd_files(root: &Sysroot, dir: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root.path(dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_yaml_name(n))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("{dir}/{n}")).collect()
}

/// k3s's `util.HasSuffixI(name, ".yaml", ".yml")`.
pub fn is_yaml_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

fn read_yaml(root: &Sysroot, path: &str) -> Result<Option<serde_yaml_ng::Mapping>, String> {
    let Some(text) = root.read_to_string(path).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    match serde_yaml_ng::from_str::<Value>(&text).map_err(|e| e.to_string())? {
        Value::Mapping(m) => Ok(Some(m)),
        Value::Null => Ok(None),
        _ => Err("not a YAML mapping".into()),
    }
}

impl K3sConfigFiles {
    /// One line for `detect`: the file, why, and its drop-ins.
    pub fn describe(&self) -> String {
        let missing = if self.exists { "" } else { ", absent" };
        let dropins = match self.dropins.len() {
            0 => format!("no drop-ins in {}", self.dropin_dir),
            n => format!("{n} drop-in(s) in {}", self.dropin_dir),
        };
        format!("{} ({}{missing}); {dropins}", self.file, self.source)
    }

    /// The config is an `http(s)://` URL (`readConfigFileData`). k3s then
    /// reads no local drop-in directory: `dotDFiles` lists `<URL>.d` with
    /// `os.ReadDir`, which finds nothing.
    pub fn is_remote(&self) -> bool {
        self.file.contains("://")
    }

    /// Every file k3s reads, in order.
    pub fn all(&self) -> Vec<&str> {
        std::iter::once(self.file.as_str())
            .filter(|_| self.exists)
            .chain(self.dropins.iter().map(String::as_str))
            .collect()
    }

    /// The merged values of `key` (`readConfigFile`): a plain key replaces
    /// everything before it, `key+` appends; a list gives one value per
    /// item, a scalar one value.
    ///
    /// The files are those read by [`files`]; a file that was not valid
    /// YAML then contributes nothing (it is listed in `problems`).
    pub fn values(&self, key: &str) -> Vec<ConfigValue> {
        self.values_of(&[key]).remove(key).unwrap_or_default()
    }

    /// [`Self::values`] for several keys in one pass.
    pub fn values_of(&self, keys: &[&str]) -> std::collections::BTreeMap<String, Vec<ConfigValue>> {
        let mut out: std::collections::BTreeMap<String, Vec<ConfigValue>> =
            keys.iter().map(|k| (k.to_string(), Vec::new())).collect();
        for (file, map) in &self.parsed {
            for (k, v) in map {
                let Some(k) = k.as_str() else { continue };
                let (name, append) = match k.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (k, false),
                };
                let Some(values) = out.get_mut(name) else {
                    continue;
                };
                if !append {
                    values.clear();
                }
                values.extend(scalars(v).into_iter().map(|value| ConfigValue {
                    value,
                    file: file.clone(),
                }));
            }
        }
        out
    }
}

fn scalars(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The values of a flag in argv: `--name v`, `--name=v`, and the one-dash
/// forms Go's flag parsing (urfave/cli v1) also accepts.
pub fn flag_values(argv: &[String], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let forms = [format!("--{name}"), format!("-{name}")];
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        for f in &forms {
            if a == f {
                if let Some(v) = argv.get(i + 1) {
                    out.push(v.clone());
                    i += 1;
                }
                break;
            } else if let Some(v) = a.strip_prefix(&format!("{f}=")) {
                out.push(v.to_string());
                break;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
            set_in: "EnvironmentFile /etc/default/k3s".into(),
        }
    }

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn environment_beats_flags_beat_default() {
        let a = argv("/usr/local/bin/k3s server -c /opt/k3s.yaml");
        assert_eq!(
            locate(&[env(CONFIG_ENV, "/srv/k3s/config.yaml")], &a).0,
            "/srv/k3s/config.yaml"
        );
        let (file, source) = locate(&[], &a);
        assert_eq!(file, "/opt/k3s.yaml");
        assert_eq!(
            source.to_string(),
            "-c /opt/k3s.yaml on the k3s command line"
        );
        assert_eq!(
            locate(&[], &argv("k3s server --config=/x.yaml")).0,
            "/x.yaml"
        );
        // `-config` is not one of k3s's config flags.
        assert_eq!(
            locate(&[], &argv("k3s server -config /x.yaml")).0,
            DEFAULT_CONFIG
        );
        assert_eq!(locate(&[env(CONFIG_ENV, "")], &[]).1, ConfigSource::Default);
        let remote = locate(&[env(CONFIG_ENV, "https://cfg.lan/k3s.yaml")], &a).0;
        assert_eq!(remote, "https://cfg.lan/k3s.yaml");
        let d = tempfile::tempdir().unwrap();
        assert!(files(&Sysroot::new(d.path()), remote, ConfigSource::Default).is_remote());
        assert!(!K3sConfigFiles::default().is_remote());
    }

    #[test]
    fn dropins_are_yaml_or_yml_in_any_case_and_plain_keys_replace() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        let dir = d.path().join("opt/k3s/config.yaml.d");
        std::fs::create_dir_all(dir.join("sub.yaml")).unwrap();
        std::fs::write(d.path().join("opt/k3s/config.yaml"), "disable: traefik\n").unwrap();
        std::fs::write(dir.join("10-a.YML"), "disable+: [sightline]\n").unwrap();
        std::fs::write(dir.join("20-b.yaml"), "disable+: servicelb\n").unwrap();
        std::fs::write(dir.join("30-c.json"), "disable: [x]\n").unwrap();
        std::fs::write(dir.join("05-bad.yml"), "a: [\n").unwrap();
        let f = files(&root, "/opt/k3s/config.yaml".into(), ConfigSource::Default);
        assert_eq!(
            f.dropins,
            vec![
                "/opt/k3s/config.yaml.d/05-bad.yml",
                "/opt/k3s/config.yaml.d/10-a.YML",
                "/opt/k3s/config.yaml.d/20-b.yaml"
            ]
        );
        assert!(f.problems[0].starts_with("/opt/k3s/config.yaml.d/05-bad.yml: "));
        assert_eq!(
            f.describe(),
            "/opt/k3s/config.yaml (k3s's default); 3 drop-in(s) in /opt/k3s/config.yaml.d"
        );
        let v: Vec<String> = f.values("disable").into_iter().map(|v| v.value).collect();
        assert_eq!(v, vec!["traefik", "sightline", "servicelb"]);
        std::fs::write(dir.join("40-d.yaml"), "disable: [only]\n").unwrap();
        let f = files(&root, "/opt/k3s/config.yaml".into(), ConfigSource::Default);
        let v = f.values("disable");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].file, "/opt/k3s/config.yaml.d/40-d.yaml");
    }

    #[test]
    fn flag_values_take_both_forms() {
        let a = argv("k3s server --disable traefik --disable=sightline,x -disable y --disabled z");
        assert_eq!(
            flag_values(&a, "disable"),
            vec!["traefik", "sightline,x", "y"]
        );
    }
}
