//! The `[Service]` settings sightline needs from a unit and its drop-ins:
//! the command line and the environment, parsed as systemd parses them
//! (systemd.syntax(7), systemd.service(5), systemd.exec(5)).

use serde::Serialize;

use crate::sysroot::Sysroot;

/// One `EnvironmentFile=` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvFile {
    /// Host path, specifiers expanded.
    pub path: String,
    /// `-` prefix: a missing file is not an error.
    pub optional: bool,
}

/// One variable of the service's environment and where it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// The unit file line or environment file that set it.
    pub set_in: String,
}

/// What a service runs and with which environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSettings {
    /// argv of the effective `ExecStart=`, prefixes removed.
    pub exec_start: Vec<String>,
    /// `Environment=` assignments, in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` entries, in order.
    pub environment_files: Vec<EnvFile>,
    /// Lines that could not be parsed, naming file and line.
    pub problems: Vec<String>,
}

/// Parses a unit's fragment and drop-ins, given as (host path, text) in
/// the order systemd applies them. An empty assignment resets a list
/// setting; a later `ExecStart=` replaces an earlier one only after such a
/// reset in systemd, but k3s units are `Type=notify`/`exec`, which allow
/// one command, so the last one is what runs.
pub fn parse(unit_name: &str, files: &[(String, String)]) -> ServiceSettings {
    let mut s = ServiceSettings::default();
    for (path, text) in files {
        let mut section = String::new();
        for (line_no, line) in logical_lines(text) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                section = line[1..line.len() - 1].to_string();
                continue;
            }
            if section != "Service" {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = expand_specifiers(value.trim(), unit_name);
            let at = format!("{path}:{line_no}");
            match key.trim() {
                "ExecStart" => {
                    if value.is_empty() {
                        s.exec_start.clear();
                    } else {
                        match command_line(&value) {
                            Some(argv) => s.exec_start = argv,
                            None => s.problems.push(format!(
                                "{at}: ExecStart has an unterminated quote; fix the quoting"
                            )),
                        }
                    }
                }
                "Environment" => {
                    if value.is_empty() {
                        s.environment.clear();
                    } else {
                        match shlex::split(&value) {
                            Some(words) => s.environment.extend(
                                words
                                    .into_iter()
                                    .filter_map(|w| {
                                        w.split_once('=').map(|(k, v)| (k.into(), v.into()))
                                    })
                                    .collect::<Vec<(String, String)>>(),
                            ),
                            None => s.problems.push(format!(
                                "{at}: Environment has an unterminated quote; fix the quoting"
                            )),
                        }
                    }
                }
                "EnvironmentFile" => {
                    if value.is_empty() {
                        s.environment_files.clear();
                    } else {
                        let (optional, p) = match value.strip_prefix('-') {
                            Some(p) => (true, p),
                            None => (false, value.as_str()),
                        };
                        s.environment_files.push(EnvFile {
                            path: p.trim().to_string(),
                            optional,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    s
}

/// Joins backslash-continued lines (systemd.syntax(7)); yields the line
/// number where each logical line starts.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        // Comment lines inside a continuation are skipped, as systemd does.
        if !acc.is_empty()
            && (raw.trim_start().starts_with('#') || raw.trim_start().starts_with(';'))
        {
            current = Some((start, acc));
            continue;
        }
        match raw.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                current = Some((start, acc));
            }
            None => {
                acc.push_str(raw);
                out.push((start, acc));
            }
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

/// The specifiers k3s units use (`%N` in install.sh's and the bakery's
/// `EnvironmentFile=-/etc/default/%N`), from systemd.unit(5) "Specifiers".
fn expand_specifiers(value: &str, unit_name: &str) -> String {
    let stem = unit_name.rsplit_once('.').map_or(unit_name, |(s, _)| s);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(unit_name),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some('i') => out.push_str(instance),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Splits an `ExecStart=` value into argv with shell-word rules and drops
/// systemd's executable prefixes (`-`, `@`, `:`, `+`, `!`, `!!`;
/// systemd.service(5) table "Special executable prefixes"). With `@` the
/// second word is argv\[0\] and the first the program, so argv\[0\] is kept.
pub fn command_line(value: &str) -> Option<Vec<String>> {
    let mut words = shlex::split(value)?;
    let first = words.first()?.clone();
    let path = first.trim_start_matches(['-', '@', ':', '+', '!']);
    let at = first.len() != path.len() && first[..first.len() - path.len()].contains('@');
    if at {
        words.remove(0);
    } else {
        words[0] = path.to_string();
    }
    Some(words)
}

/// The service's environment: `Environment=` first, then each
/// `EnvironmentFile=` in order, whose values override (systemd.exec(5):
/// "Settings from these files override settings made with Environment=").
pub fn environment(root: &Sysroot, unit_file: &str, s: &ServiceSettings) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = Vec::new();
    let mut set = |name: String, value: String, set_in: String| {
        vars.retain(|v| v.name != name);
        vars.push(EnvVar {
            name,
            value,
            set_in,
        });
    };
    for (k, v) in &s.environment {
        set(k.clone(), v.clone(), format!("Environment= in {unit_file}"));
    }
    for f in &s.environment_files {
        if let Ok(Some(text)) = root.read_to_string(&f.path) {
            for (k, v) in env_file(&text) {
                set(k, v, format!("EnvironmentFile {}", f.path));
            }
        }
    }
    vars
}

/// `KEY=VALUE` lines of an environment file: `#`/`;` comments, optional
/// matching quotes around the value (systemd `load_env_file`).
pub fn env_file(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .into_iter()
        .filter_map(|(_, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
                .unwrap_or(v);
            Some((k.trim().to_string(), unquoted.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> ServiceSettings {
        parse(
            "k3s.service",
            &[("/etc/systemd/system/k3s.service".into(), text.into())],
        )
    }

    #[test]
    fn exec_start_follows_shell_words_not_whitespace() {
        let s = one(
            "[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--node-label=a b' \\\n# a comment inside the continuation\n\t\"--kube-apiserver-arg=audit-log-maxage=30\"\n",
        );
        assert_eq!(
            s.exec_start,
            vec![
                "/usr/local/bin/k3s",
                "server",
                "--node-label=a b",
                "--kube-apiserver-arg=audit-log-maxage=30"
            ]
        );
        let s = one("[Service]\nExecStart=-@/usr/local/bin/k3s k3s agent\n");
        assert_eq!(s.exec_start, vec!["k3s", "agent"]);
        let s = one("[Service]\nExecStart=/usr/local/bin/k3s 'server\n");
        assert!(s.exec_start.is_empty());
        assert!(s.problems[0].contains("k3s.service:2"), "{:?}", s.problems);
        let s =
            one("[Unit]\nExecStart=/bin/false\n[Service]\nExecStart=/bin/k3s server\nExecStart=\n");
        assert!(s.exec_start.is_empty());
    }

    #[test]
    fn environment_files_override_environment_and_expand_specifiers() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        std::fs::create_dir_all(d.path().join("etc/default")).unwrap();
        std::fs::write(
            d.path().join("etc/default/k3s"),
            "# comment\nK3S_CONFIG_FILE=\"/opt/k3s/config.yaml\"\nOTHER='x y'\n",
        )
        .unwrap();
        let s = one(
            "[Service]\nEnvironment=\"K3S_CONFIG_FILE=/etc/a b.yaml\" K3S_TOKEN=t\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/sysconfig/%n\n",
        );
        assert_eq!(
            s.environment_files,
            vec![
                EnvFile {
                    path: "/etc/default/k3s".into(),
                    optional: true
                },
                EnvFile {
                    path: "/etc/sysconfig/k3s.service".into(),
                    optional: true
                }
            ]
        );
        let env = environment(&root, "/etc/systemd/system/k3s.service", &s);
        let get = |n: &str| env.iter().find(|v| v.name == n).unwrap();
        assert_eq!(get("K3S_CONFIG_FILE").value, "/opt/k3s/config.yaml");
        assert_eq!(
            get("K3S_CONFIG_FILE").set_in,
            "EnvironmentFile /etc/default/k3s"
        );
        assert_eq!(get("K3S_TOKEN").value, "t");
        assert_eq!(get("OTHER").value, "x y");
    }
}
