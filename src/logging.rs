//! Logging: to journald, with priorities and structured fields, when stderr
//! is the journal (so `journalctl -u sightline -p err` finds errors and
//! `SIGHTLINE_STAGE=loki` finds a stage); plain lines with timestamps and
//! colour on a terminal; plain lines elsewhere.
//!
//! What is logged: `SIGHTLINE_LOG` (an EnvFilter directive such as `debug`
//! or `sightline=trace`), else `-v`/`-q`, else the command's default.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The prefix of sightline's own journal fields (`SIGHTLINE_STAGE`,
/// `SIGHTLINE_PATH`, `SIGHTLINE_ERROR`): journald keeps user fields as
/// given, and a prefix keeps them apart from its own (`PRIORITY`, `MESSAGE`).
pub const JOURNAL_FIELD_PREFIX: &str = "SIGHTLINE";

/// True when systemd started this process (its stderr may be the journal).
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

/// True when stderr is the journal stream systemd connected: systemd.exec(5)
/// says to compare `JOURNAL_STREAM` (`device:inode`) with stderr's, since
/// a child whose stderr was redirected inherits the variable.
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

type BoxedFilter = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The level filter: `SIGHTLINE_LOG` wins; then `forced` (`-v`, `-q`); then `default_level`.
///
/// A plain level becomes a [`LevelFilter`]: building an `EnvFilter` parses
/// directives with regexes, a measurable share of a no-op run's time, and
/// buys nothing when the directive is one word.
fn filter(default_level: &str, forced: Option<&str>) -> BoxedFilter {
    if std::env::var_os("SIGHTLINE_LOG").is_some()
        && let Ok(f) = EnvFilter::try_from_env("SIGHTLINE_LOG")
    {
        return f.boxed();
    }
    let directive = forced.unwrap_or(default_level);
    match directive.parse::<LevelFilter>() {
        Ok(level) => level.boxed(),
        Err(_) => EnvFilter::new(directive).boxed(),
    }
}

fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    Ok(tracing_journald::layer()?
        .with_syslog_identifier("sightline".into())
        .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
        // syslog's meaning of the levels: info is informational (6), not
        // notice (5), so `-p notice` shows only what needs a look.
        .with_priority_mappings(PriorityMappings {
            info: Priority::Informational,
            debug: Priority::Debug,
            ..PriorityMappings::new()
        }))
}

/// Installs the global subscriber.
pub fn init(default_level: &str, forced: Option<&str>) {
    let journald = if stderr_is_journal() {
        journald_layer()
            // No journald socket (a container without one): the stream
            // still reaches the journal, as plain lines.
            .inspect_err(|e| eprintln!("sightline: no journald socket ({e}); logging to stderr"))
            .ok()
    } else {
        None
    };
    let terminal = journald.is_none() && std::io::stderr().is_terminal();
    // Timestamps on a terminal only: the journal and log collectors add their own.
    let lines = journald.is_none().then(|| {
        let l = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(terminal);
        if terminal {
            l.boxed()
        } else {
            l.without_time().boxed()
        }
    });
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter(default_level, forced))
        .with(journald)
        .with(lines)
        .try_init();
}
