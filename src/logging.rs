//! Logging setup: plain lines without timestamps under systemd (journald
//! adds its own), timestamps and colour on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// True when stderr is connected to the journal.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

/// Installs the global subscriber. `default_level` applies unless
/// `SIGHTLINE_LOG` (an EnvFilter directive) says otherwise.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_env("SIGHTLINE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if under_systemd() {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    // A second init (tests) is harmless.
    let _ = result;
}
