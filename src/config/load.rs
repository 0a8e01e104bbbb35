//! Finding, parsing and merging configuration files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::diag::{ConfigError, Origin};
use super::model::Config;
use super::validate::validate;
use crate::sysroot::Sysroot;

/// The main configuration file (host path).
pub const MAIN_FILE: &str = "/etc/sightline/config.toml";

/// Drop-in directories, lowest priority first. A name in a later directory
/// hides the same name in an earlier one.
pub const DROPIN_DIRS: [&str; 3] = [
    "/usr/lib/sightline/config.d",
    "/run/sightline/config.d",
    "/etc/sightline/config.d",
];

/// One file that took part in the merge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    /// Host path.
    pub path: PathBuf,
    /// True when a /dev/null symlink masked this drop-in name.
    pub masked: bool,
}

/// The merged configuration and where each value came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    /// Dotted key path → origin, for every key set by a file.
    pub origins: BTreeMap<String, Origin>,
    /// Files merged (and masked names), in merge order.
    pub sources: Vec<Source>,
}

impl LoadedConfig {
    /// Where the value at a dotted key path came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }
}

/// Loads and validates the configuration under `root`. Nothing is written.
pub fn load(root: &Sysroot) -> Result<LoadedConfig, ConfigError> {
    let mut merged = toml::Table::new();
    let mut origins = BTreeMap::new();
    let mut sources = Vec::new();
    for source in discover(root)? {
        if !source.masked {
            let text = read(root, &source.path)?;
            merge_layer(&source.path, &text, &mut merged, &mut origins)?;
        }
        sources.push(source);
    }
    let config: Config = toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| {
            // Every layer was checked on its own; reaching here is a bug, but
            // still say something useful.
            ConfigError {
                origin: Origin::Default,
                message: format!("merged configuration is invalid: {}", e.message()),
                snippet: None,
                fix: "check the drop-ins listed by `sightline config`".into(),
            }
        })?;
    let loaded = LoadedConfig {
        config,
        origins,
        sources,
    };
    if let Some(problem) = validate(&loaded.config).into_iter().next() {
        return Err(locate_problem(root, &loaded, problem));
    }
    Ok(loaded)
}

/// The files to merge, in order: the main file, then the winning drop-in for
/// each name in lexical order.
fn discover(root: &Sysroot) -> Result<Vec<Source>, ConfigError> {
    let mut out = Vec::new();
    // Anything at the main file's name takes part, as a drop-in does: a
    // dangling symlink, a directory or a FIFO there is an error naming it,
    // never a silent fall back to the defaults.
    if std::fs::symlink_metadata(root.path(MAIN_FILE)).is_ok() {
        out.push(Source {
            path: MAIN_FILE.into(),
            masked: false,
        });
    }
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in DROPIN_DIRS {
        let real = root.resolve(dir);
        let entries = match std::fs::read_dir(&real) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(Path::new(dir), &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error(Path::new(dir), &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") && !name.starts_with('.') {
                by_name.insert(name.clone(), Path::new(dir).join(&name));
            }
        }
    }
    for (_, path) in by_name {
        let masked = std::fs::read_link(root.path(&path))
            .map(|t| t == Path::new("/dev/null"))
            .unwrap_or(false);
        out.push(Source { path, masked });
    }
    Ok(out)
}

/// Reads a config file: a regular file only (a FIFO would block forever),
/// UTF-8, with a bad byte reported at its own line and column.
fn read(root: &Sysroot, path: &Path) -> Result<String, ConfigError> {
    let bytes =
        crate::sysroot::read_regular(&root.resolve(path)).map_err(|e| io_error(path, &e))?;
    String::from_utf8(bytes).map_err(|e| {
        let (line, column) = crate::sysroot::line_col(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfigError {
            origin: Origin::File {
                path: path.to_path_buf(),
                line,
                column,
            },
            message: "not UTF-8: invalid byte here".into(),
            snippet: None,
            fix: "save the file as UTF-8".into(),
        }
    })
}

fn io_error(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError {
        origin: Origin::File {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
        },
        message: format!("cannot read: {e}"),
        snippet: None,
        fix: "make the file readable UTF-8 TOML, or remove it".into(),
    }
}

/// Checks one file on its own (syntax, known keys, types) and merges it.
fn merge_layer(
    path: &Path,
    text: &str,
    merged: &mut toml::Table,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), ConfigError> {
    let fail = |e: toml::de::Error| {
        let offset = e.span().map_or(0, |s| s.start);
        let message = e.message().trim().to_string();
        let fix = fix_hint(&message);
        ConfigError::at(path.to_path_buf(), text, offset, message, fix)
    };
    // Deserializing the file alone catches unknown keys and bad values with
    // their exact position, before anything is merged.
    toml::from_str::<Config>(text).map_err(fail)?;
    let spanned = DeTable::parse(text).map_err(fail)?;
    record_origins(path, text, spanned.get_ref(), "", origins);
    let layer: toml::Table = toml::from_str(text).map_err(fail)?;
    deep_merge(merged, layer);
    Ok(())
}

fn record_origins(
    path: &Path,
    text: &str,
    table: &DeTable<'_>,
    prefix: &str,
    origins: &mut BTreeMap<String, Origin>,
) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        match value.get_ref() {
            DeValue::Table(t) => record_origins(path, text, t, &dotted, origins),
            _ => {
                let (line, column, _) = super::diag::locate(text, key.span().start);
                origins.insert(
                    dotted,
                    Origin::File {
                        path: path.to_path_buf(),
                        line,
                        column,
                    },
                );
            }
        }
    }
}

/// Tables merge key by key; anything else (including arrays) is replaced.
fn deep_merge(base: &mut toml::Table, layer: toml::Table) {
    for (k, v) in layer {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => deep_merge(b, l),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn fix_hint(message: &str) -> String {
    if message.contains("unknown field") {
        "remove or rename the key; the accepted keys are listed above and in /usr/share/doc/sightline/config.toml".into()
    } else if message.contains("unknown variant") {
        "use one of the listed values".into()
    } else if message.contains("invalid type") {
        "give the value the type shown (quote strings, no quotes around numbers and booleans)"
            .into()
    } else {
        "correct the TOML at the position shown".into()
    }
}

fn locate_problem(
    root: &Sysroot,
    loaded: &LoadedConfig,
    p: super::validate::Problem,
) -> ConfigError {
    let origin = match (loaded.origin(&p.key), &p.related) {
        (Origin::Default, Some(other)) => loaded.origin(other),
        (o, _) => o,
    };
    match origin {
        Origin::File { path, line, column } => {
            let snippet = root
                .read_to_string(&path)
                .ok()
                .flatten()
                .and_then(|t| t.lines().nth(line - 1).map(str::to_string));
            ConfigError {
                origin: Origin::File { path, line, column },
                message: format!("{}: {}", p.key, p.message),
                snippet,
                fix: p.fix,
            }
        }
        Origin::Default => ConfigError {
            origin: Origin::File {
                path: MAIN_FILE.into(),
                line: 1,
                column: 1,
            },
            message: format!("{}: {}", p.key, p.message),
            snippet: None,
            fix: p.fix,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TierChoice;
    use std::os::unix::fs::symlink;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Sysroot) {
        let d = tempfile::tempdir().unwrap();
        let r = Sysroot::new(d.path());
        for (p, c) in files {
            let real = r.path(p);
            std::fs::create_dir_all(real.parent().unwrap()).unwrap();
            std::fs::write(real, c).unwrap();
        }
        (d, r)
    }

    #[test]
    fn no_files_gives_defaults() {
        let (_d, r) = root_with(&[]);
        let l = load(&r).unwrap();
        assert_eq!(l.config, Config::default());
        assert!(l.sources.is_empty());
    }

    #[test]
    fn dropins_merge_in_name_order_with_priority_and_masking() {
        let (_d, r) = root_with(&[
            (
                "/etc/sightline/config.toml",
                "tier = \"full\"\n[k3s]\nunit = \"k3s-main.service\"\n",
            ),
            (
                "/usr/lib/sightline/config.d/10-vendor.toml",
                "[loki]\nretention_days = 20\n",
            ),
            (
                "/usr/lib/sightline/config.d/20-hidden.toml",
                "[loki]\nretention_days = 25\n",
            ),
            (
                "/etc/sightline/config.d/20-hidden.toml",
                "[watchdog]\ntimeout_seconds = 40\n",
            ),
            (
                "/run/sightline/config.d/30-light.toml",
                "tier = \"light\"\n",
            ),
            (
                "/usr/lib/sightline/config.d/40-masked.toml",
                "tier = \"full\"\n",
            ),
        ]);
        std::fs::create_dir_all(r.path("/etc/sightline/config.d")).unwrap();
        symlink(
            "/dev/null",
            r.path("/etc/sightline/config.d/40-masked.toml"),
        )
        .unwrap();
        let l = load(&r).unwrap();
        assert_eq!(l.config.tier, TierChoice::Light);
        assert_eq!(l.config.k3s.unit, "k3s-main.service");
        assert_eq!(
            l.config.loki.retention_days, 20,
            "/etc's 20-hidden.toml hides /usr/lib's"
        );
        assert_eq!(l.config.watchdog.timeout_seconds, 40);
        assert_eq!(
            l.origin("tier"),
            Origin::File {
                path: "/run/sightline/config.d/30-light.toml".into(),
                line: 1,
                column: 1
            }
        );
        assert_eq!(l.origin("k3s.api_url"), Origin::Default);
        assert!(
            l.sources
                .iter()
                .any(|s| s.masked && s.path.ends_with("40-masked.toml"))
        );
    }

    #[test]
    fn unknown_key_names_file_line_column() {
        let (_d, r) = root_with(&[(
            "/etc/sightline/config.d/50-typo.toml",
            "# comment\n[watchdog]\nenabled = true\ntimeout_secs = 10\n",
        )]);
        let e = load(&r).unwrap_err();
        assert_eq!(
            e.origin,
            Origin::File {
                path: "/etc/sightline/config.d/50-typo.toml".into(),
                line: 4,
                column: 1
            }
        );
        assert!(e.message.contains("timeout_secs"), "{e}");
        assert!(
            e.message.contains("timeout_seconds"),
            "expected keys listed: {e}"
        );
    }

    #[test]
    fn bad_enum_value_points_at_value() {
        let (_d, r) = root_with(&[("/etc/sightline/config.toml", "tier = \"medium\"\n")]);
        let e = load(&r).unwrap_err();
        assert_eq!(
            e.origin,
            Origin::File {
                path: "/etc/sightline/config.toml".into(),
                line: 1,
                column: 8
            }
        );
        assert!(e.to_string().contains("full"), "{e}");
    }

    #[test]
    fn semantic_error_uses_origin_of_key() {
        let (_d, r) = root_with(&[(
            "/etc/sightline/config.toml",
            "[loki]\n\nretention_days = 90\n",
        )]);
        let e = load(&r).unwrap_err();
        assert_eq!(
            e.origin,
            Origin::File {
                path: "/etc/sightline/config.toml".into(),
                line: 3,
                column: 1
            }
        );
        assert!(e.message.contains("7") && e.message.contains("30"), "{e}");
    }

    #[test]
    fn syntax_error_is_located() {
        let (_d, r) = root_with(&[("/etc/sightline/config.toml", "[k3s\nunit = 1\n")]);
        let e = load(&r).unwrap_err();
        match e.origin {
            Origin::File { line, .. } => assert_eq!(line, 1),
            _ => panic!("{e}"),
        }
    }

    #[test]
    fn main_file_that_is_not_a_regular_file_is_an_error() {
        type Make = fn(&Path);
        let make: [(&str, Make); 3] = [
            ("dangling symlink", |p| {
                symlink("/nonexistent/config.toml", p).unwrap()
            }),
            ("directory", |p| std::fs::create_dir(p).unwrap()),
            ("FIFO", |p| {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }),
        ];
        for (what, make) in make {
            let (_d, r) = root_with(&[]);
            std::fs::create_dir_all(r.path("/etc/sightline")).unwrap();
            make(&r.path(MAIN_FILE));
            let e = load(&r).expect_err(what);
            assert!(e.to_string().starts_with(MAIN_FILE), "{what}: {e}");
        }
    }

    #[test]
    fn fifo_dropin_is_refused_without_hanging() {
        let (_d, r) = root_with(&[]);
        let dir = r.path("/etc/sightline/config.d");
        std::fs::create_dir_all(&dir).unwrap();
        nix::unistd::mkfifo(
            &dir.join("10-fifo.toml"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = load(&r).unwrap_err();
        assert!(e.to_string().contains("10-fifo.toml"), "{e}");
        assert!(e.message.contains("FIFO"), "{e}");
    }

    #[test]
    fn non_utf8_byte_is_reported_at_its_line() {
        let (_d, r) = root_with(&[]);
        let p = r.path(MAIN_FILE);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"[loki]\n# caf\xe9\nretention_days = 20\n").unwrap();
        let e = load(&r).unwrap_err();
        assert_eq!(
            e.origin,
            Origin::File {
                path: MAIN_FILE.into(),
                line: 2,
                column: 6
            }
        );
    }

    #[test]
    fn a_clash_points_at_the_line_that_made_it() {
        let (_d, r) = root_with(&[(
            "/etc/sightline/config.toml",
            "[paths]\naudit_policy = \"/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml\"\n",
        )]);
        let e = load(&r).unwrap_err();
        assert_eq!(
            e.origin,
            Origin::File {
                path: MAIN_FILE.into(),
                line: 2,
                column: 1
            },
            "{e}"
        );
        assert!(e.message.contains("paths.audit_policy"), "{e}");
    }
}

#[cfg(test)]
mod shipped_defaults {
    use crate::config::Config;

    /// The commented defaults shipped as /etc/sightline/config.toml must
    /// parse when uncommented and say exactly what the built-in defaults are
    /// (examples aside), so the documentation cannot drift from the code.
    #[test]
    fn uncommented_shipped_config_equals_the_builtin_defaults() {
        let text = include_str!("../../files/config.toml");
        // Optional keys (and the empty LAN list) are shown with example
        // values, not defaults.
        let is_example = |section: &str, key: &str| {
            crate::config::OPTIONAL_KEYS.contains(&format!("{section}.{key}").as_str())
                || key == "lan_cidrs"
        };
        let mut out = String::new();
        let mut documented = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in text.lines() {
            if let Some(kv) = line.strip_prefix('#')
                && kv.contains(" = ")
                && !kv.starts_with(' ')
            {
                let key = kv.split(" = ").next().unwrap();
                documented.insert(if section.is_empty() {
                    key.to_string()
                } else {
                    format!("{section}.{key}")
                });
                if !is_example(&section, key) {
                    out.push_str(kv);
                    out.push('\n');
                }
            } else if let Some(name) = line.strip_prefix('[') {
                section = name.trim_end_matches(']').to_string();
                out.push_str(line);
                out.push('\n');
            }
        }
        let parsed: Config = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(parsed, Config::default());
        // Every key of the schema appears in the file: those with a default
        // value, and the optional ones (unset by default).
        let mut schema = std::collections::BTreeSet::new();
        for (k, v) in toml::Table::try_from(Config::default()).unwrap() {
            match v.as_table() {
                Some(t) => schema.extend(t.keys().map(|kk| format!("{k}.{kk}"))),
                None => {
                    schema.insert(k);
                }
            }
        }
        schema.extend(crate::config::OPTIONAL_KEYS.iter().map(|k| k.to_string()));
        assert_eq!(
            documented, schema,
            "every option is documented in files/config.toml"
        );
    }
}
