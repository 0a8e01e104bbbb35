//! `sightline manpage --out DIR`: sightline(1) and a page per command, each
//! with EXIT STATUS, ENVIRONMENT and FILES, and sightline.toml(5), rendered
//! from `files/config.toml` (see `config::doc`), the same text the packages
//! ship as `/etc/sightline/config.toml`.
//!
//! clap_mangen renders the sections clap knows; the rest is written here
//! from the code's own constants (exit codes, config paths, the variables
//! clap reads), so the pages follow the program.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::Cli;
use super::{EXIT_CHANGES, EXIT_CLUSTER_PENDING, EXIT_ERROR, EXIT_OK};
use crate::config::{Config, DROPIN_DIRS, MAIN_FILE, doc};

/// Where the packages put the pristine commented defaults.
pub const SHIPPED_DEFAULTS: &str = "/usr/share/doc/sightline/config.toml";

/// Writes every page into `out` and returns their file names.
pub fn write_all(out: &Path) -> Result<Vec<String>> {
    crate::atomic::create_dir_all(out, 0o755)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    for (name, text) in command_pages(&cmd)? {
        pages.push(name);
        write(out, pages.last().unwrap(), &text)?;
    }
    let text = config_page()?;
    pages.push("sightline.toml.5".into());
    write(out, "sightline.toml.5", &text)?;
    Ok(pages)
}

fn write(out: &Path, name: &str, text: &str) -> Result<()> {
    let path = out.join(name);
    crate::atomic::write_atomic(&path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// sightline(1) and one page per visible command, depth first.
fn command_pages(cmd: &clap::Command) -> Result<Vec<(String, String)>> {
    let mut pages = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.extend(command_pages(sub)?);
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    let mut text = String::from_utf8(buf).context("clap_mangen wrote non-UTF-8")?;
    text.push_str(&exit_status(cmd.get_name()));
    text.push_str(&environment());
    text.push_str(&files());
    text.push_str(".SH \"SEE ALSO\"\n\\fBsightline.toml\\fR(5), \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1)\n");
    let mut buf = Vec::new();
    man.render_version_section(&mut buf)?;
    text.push_str(&String::from_utf8_lossy(&buf));
    pages.push((man.get_filename(), text));
    Ok(pages)
}

/// Exit codes beyond 0 and 1, by command name.
fn extra_exit_codes(command: &str) -> Vec<(u8, &'static str)> {
    let changes = (
        EXIT_CHANGES,
        "plan --exit-code: changes are pending (0 means there is nothing to do).",
    );
    let pending = (
        EXIT_CLUSTER_PENDING,
        "apply: the host layer is done, but the k3s API did not answer within [k3s] api_wait_seconds, so the cluster stages are pending; sightline run keeps retrying.",
    );
    match command {
        "plan" => vec![changes],
        "apply" => vec![pending],
        "sightline" => vec![changes, pending],
        _ => Vec::new(),
    }
}

fn exit_status(command: &str) -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    let mut item = |code: u8, text: &str| {
        let _ = write!(s, ".TP\n\\fB{code}\\fR\n{}\n", escape(text));
    };
    item(EXIT_OK, "Success.");
    item(
        EXIT_ERROR,
        "An error. The message names the file, the line and the fix; nothing was left half-written.",
    );
    for (code, text) in extra_exit_codes(command) {
        item(code, text);
    }
    s
}

fn environment() -> String {
    let mut s = String::from(".SH ENVIRONMENT\n");
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let _ = write!(
                s,
                ".TP\n\\fB{}\\fR\nThe default of \\fB--{long}\\fR: {}\n",
                escape(&env.to_string_lossy()),
                escape(&help)
            );
        }
    }
    for (var, text) in [
        (
            "SIGHTLINE_LOG",
            "A tracing filter directive (e.g. \"debug\", or \"sightline=trace\") for what is logged. The default is \"info\" for apply, uninstall and run, \"warn\" for the read-only commands.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID",
            "Set by systemd for sightline run (Type=notify): readiness and watchdog keep-alives go there.",
        ),
        (
            "JOURNAL_STREAM, INVOCATION_ID",
            "Set by systemd: log lines then carry no timestamp and no colour, as journald adds its own.",
        ),
    ] {
        let _ = write!(s, ".TP\n\\fB{var}\\fR\n{}\n", escape(text));
    }
    s
}

fn files() -> String {
    let d = Config::default();
    let p = &d.paths;
    let mut s = String::from(".SH FILES\n");
    let dropins = DROPIN_DIRS
        .iter()
        .map(|d| format!("{d}/*.toml"))
        .collect::<Vec<_>>()
        .join(", ");
    let entries: Vec<(String, String)> = vec![
        (
            MAIN_FILE.into(),
            "The configuration; see sightline.toml(5). Mode 0600 when it holds a secret.".into(),
        ),
        (
            dropins,
            "Drop-ins merged over it in lexical order of file name; /etc hides /run hides /usr/lib.".into(),
        ),
        (
            SHIPPED_DEFAULTS.into(),
            "Every key with its default, as shipped.".into(),
        ),
        (
            d.bundle.path.clone(),
            "The stack bundle (the copy built into the binary is used when it is absent).".into(),
        ),
        (
            format!("{}/<release>.yaml", d.bundle.values_dir),
            "Your Helm values, merged over the bundle's.".into(),
        ),
        (
            p.state_dir.clone(),
            "State, backups of replaced files, the k3s restart journal and generated secrets.".into(),
        ),
        (
            p.run_dir.clone(),
            "The lock every sightline process takes, and status.json.".into(),
        ),
        (
            format!("{}, {}", p.audit_policy, p.k3s_audit_dropin),
            "The audit policy and the k3s drop-in that loads it.".into(),
        ),
        (
            p.watchdog_dropin.clone(),
            "The systemd drop-in that arms the hardware watchdog.".into(),
        ),
        (
            p.manifests_dir.clone(),
            "The stage files k3s applies.".into(),
        ),
        (
            format!("{}, {}", d.daemon.metrics_file, d.throttle.output),
            "node_exporter textfile metrics: sightline's own and the Raspberry Pi throttle state."
                .into(),
        ),
    ];
    for (path, text) in entries {
        let _ = write!(s, ".TP\n\\fI{}\\fR\n{}\n", escape(&path), escape(&text));
    }
    s
}

/// sightline.toml(5), from `files/config.toml`.
fn config_page() -> Result<String> {
    let parsed =
        doc::shipped().map_err(|e| anyhow::anyhow!("files/config.toml (built in): {e}"))?;
    let defaults = toml::Table::try_from(Config::default()).context("serializing the defaults")?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        ".TH sightline.toml 5 \"\" \"sightline {}\" \"File Formats\"",
        env!("CARGO_PKG_VERSION")
    );
    s.push_str(".SH NAME\nsightline.toml \\- configuration of sightline\n");
    let _ = write!(
        s,
        ".SH SYNOPSIS\n\\fI{MAIN_FILE}\\fR\n.br\n{}\n",
        DROPIN_DIRS
            .iter()
            .map(|d| format!("\\fI{d}/*.toml\\fR"))
            .collect::<Vec<_>>()
            .join("\n.br\n")
    );
    s.push_str(".SH DESCRIPTION\n");
    paragraphs(&mut s, &parsed.preamble);
    let _ = write!(
        s,
        ".PP\n{}\n",
        escape(&format!(
            "Every key is listed below with its default. Keys without a default are unset unless given; their value below is an example. The same text, as TOML, is {SHIPPED_DEFAULTS}."
        ))
    );
    s.push_str(".SH OPTIONS\n");
    for section in &parsed.sections {
        let title = if section.name.is_empty() {
            "Top level".to_string()
        } else {
            format!("[{}]", section.name)
        };
        let _ = writeln!(s, ".SS \"{}\"", escape(&title));
        if !section.doc.is_empty() {
            paragraphs(&mut s, &section.doc);
        }
        for key in &section.keys {
            let shown = match default_of(&defaults, &section.name, &key.key) {
                None => format!("(unset; example: {})", key.value),
                Some(d) if shown_value(&key.value).as_ref() == Some(&d) => {
                    format!("(default: {d})")
                }
                Some(d) => format!("(default: {d}; example: {})", key.value),
            };
            let _ = write!(
                s,
                ".TP\n\\fB{}\\fR {}\n{}\n",
                escape(&key.key),
                escape(&shown),
                escape(&key.doc.join(" "))
            );
        }
    }
    let _ = write!(
        s,
        ".SH FILES\n.TP\n\\fI{MAIN_FILE}\\fR\nThe main file. The packages install it with mode 0600, as it may hold secrets.\n.TP\n\\fI{SHIPPED_DEFAULTS}\\fR\nThis page's content as TOML.\n"
    );
    s.push_str(".SH \"SEE ALSO\"\n\\fBsightline\\fR(1), \\fBsightline-config\\fR(1)\n");
    Ok(s)
}

/// The built-in default of `section.key` (top level when `section` is
/// empty); None for keys unset by default.
fn default_of(defaults: &toml::Table, section: &str, key: &str) -> Option<toml::Value> {
    let table = if section.is_empty() {
        defaults
    } else {
        defaults.get(section)?.as_table()?
    };
    table.get(key).cloned()
}

/// The value a `#key = value` line shows, parsed.
fn shown_value(text: &str) -> Option<toml::Value> {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()?
        .remove("v")
}

/// Comment lines as roff paragraphs: an empty line starts a new one.
fn paragraphs(s: &mut String, lines: &[String]) {
    s.push_str(".PP\n");
    for l in lines {
        if l.is_empty() {
            s.push_str(".PP\n");
        } else {
            s.push_str(&escape(l));
            s.push('\n');
        }
    }
}

/// Escapes text for a roff line: backslashes, and a leading `.` or `'`
/// that roff would read as a request.
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OPTIONAL_KEYS;

    fn pages() -> (tempfile::TempDir, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        let pages = write_all(d.path()).unwrap();
        (d, pages)
    }

    #[test]
    fn every_command_page_has_exit_status_environment_and_files() {
        let (d, pages) = pages();
        assert!(pages.contains(&"sightline.1".to_string()), "{pages:?}");
        assert!(pages.contains(&"sightline-plan.1".to_string()), "{pages:?}");
        assert!(
            !pages
                .iter()
                .any(|p| p.contains("manpage") || p.contains("completions")),
            "hidden commands get no page: {pages:?}"
        );
        for p in pages.iter().filter(|p| p.ends_with(".1")) {
            let text = std::fs::read_to_string(d.path().join(p)).unwrap();
            for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES"] {
                assert!(text.contains(section), "{p} lacks {section}");
            }
            assert!(text.contains("\\fBSIGHTLINE_ROOT\\fR"), "{p}");
            assert!(text.contains("\\fBSIGHTLINE_LOG\\fR"), "{p}");
            assert!(text.contains("/etc/sightline/config.toml"), "{p}");
        }
        let plan = std::fs::read_to_string(d.path().join("sightline-plan.1")).unwrap();
        assert!(plan.contains(&format!("\\fB{EXIT_CHANGES}\\fR\nplan \\-\\-exit\\-code")));
        let apply = std::fs::read_to_string(d.path().join("sightline-apply.1")).unwrap();
        assert!(apply.contains(&format!("\\fB{EXIT_CLUSTER_PENDING}\\fR\n")));
        assert!(!apply.contains(&format!("\\fB{EXIT_CHANGES}\\fR\n")));
    }

    /// The page documents every key of the schema with the default the code
    /// has, so it fails when files/config.toml (its source) and the code drift.
    #[test]
    fn sightline_toml_5_documents_every_key_with_the_code_default() {
        let (d, _) = pages();
        let page = std::fs::read_to_string(d.path().join("sightline.toml.5")).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut checked = 0;
        for (name, value) in &defaults {
            let (section, keys) = match value.as_table() {
                Some(t) => (format!("[{name}]"), t.clone()),
                None => (
                    "Top level".to_string(),
                    toml::Table::from_iter([(name.clone(), value.clone())]),
                ),
            };
            let at = page
                .find(&format!(".SS \"{}\"", escape(&section)))
                .unwrap_or_else(|| panic!("no section {section} in sightline.toml(5)"));
            for (key, v) in keys {
                let entry = format!(
                    ".TP\n\\fB{}\\fR {}",
                    escape(&key),
                    escape(&format!("(default: {v}"))
                );
                assert!(
                    page[at..].contains(&entry),
                    "sightline.toml(5) does not show {section} {key} with its default {v}"
                );
                checked += 1;
            }
        }
        for key in OPTIONAL_KEYS {
            let short = key.rsplit('.').next().unwrap();
            assert!(
                page.contains(&format!(".TP\n\\fB{}\\fR (unset; example: ", escape(short))),
                "{key}"
            );
        }
        assert!(checked > 30, "{checked}");
    }

    #[test]
    fn roff_escapes_requests_and_backslashes() {
        assert_eq!(escape(".x"), "\\&.x");
        assert_eq!(escape("'x"), "\\&'x");
        assert_eq!(escape("a\\b-c"), "a\\eb\\-c");
    }
}
