//! Progress of the rollout: one line per stage with its state and elapsed
//! time — redrawn live on a terminal, plain lines elsewhere (the journal).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tracing::info;

use super::StageState;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A terminal: the current stage's line is redrawn in place.
    Live,
    /// Plain lines on stdout, one per state change.
    Lines,
    /// Structured log events (the daemon).
    Log,
    /// Nothing (tests).
    Quiet,
}

impl Progress {
    /// Live on a terminal, plain lines otherwise.
    pub fn for_stdout() -> Progress {
        if std::io::stdout().is_terminal() && !crate::logging::under_systemd() {
            Progress::Live
        } else {
            Progress::Lines
        }
    }

    /// Reports a stage's state. `final_state` ends the stage's line.
    pub fn update(
        &self,
        stage: &str,
        state: StageState,
        detail: &str,
        elapsed: Duration,
        final_state: bool,
    ) {
        let state = state.name();
        let line = format!(
            "  {stage:<26} {state:<8} {:>6.1}s  {detail}",
            elapsed.as_secs_f64()
        );
        match self {
            Progress::Live => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r\x1b[2K{}", truncate(&line, 160));
                if final_state {
                    let _ = writeln!(out);
                }
                let _ = out.flush();
            }
            Progress::Lines => println!("{}", line.trim_end()),
            Progress::Log => info!(
                stage,
                state,
                elapsed_s = elapsed.as_secs(),
                detail,
                "rollout"
            ),
            Progress::Quiet => {}
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
