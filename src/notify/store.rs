//! The notifier's files under the state directory. Each is small JSON,
//! written atomically and only when its content changed.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic::write_atomic;
use crate::config::Config;
use crate::sysroot::Sysroot;

/// Host paths of the notifier's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Open events and what the monitor must remember.
    pub events: String,
    /// Messages not delivered yet.
    pub queue: String,
    /// Counters and last delivery per channel.
    pub deliveries: String,
    /// The clean-stop marker.
    pub clean_stop: String,
}

impl Paths {
    /// Under `[paths] state_dir`/notify.
    pub fn new(cfg: &Config) -> Paths {
        let d = format!("{}/notify", cfg.paths.state_dir);
        Paths {
            events: format!("{d}/events.json"),
            queue: format!("{d}/queue.json"),
            deliveries: format!("{d}/deliveries.json"),
            clean_stop: format!("{d}/clean-stop"),
        }
    }
}

/// A JSON file that is rewritten only when its content changes.
#[derive(Debug, Clone)]
pub struct JsonFile {
    real: PathBuf,
    written: Option<String>,
}

impl JsonFile {
    /// The file at `host_path` under `root`.
    pub fn new(root: &Sysroot, host_path: &str) -> JsonFile {
        JsonFile {
            real: root.path(host_path),
            written: None,
        }
    }

    /// Reads it: `None` when absent or unreadable (a corrupt file is
    /// logged and replaced on the next write).
    pub fn load<T: DeserializeOwned>(&mut self) -> Option<T> {
        let text = std::fs::read_to_string(&self.real).ok()?;
        match serde_json::from_str(&text) {
            Ok(v) => {
                self.written = Some(text);
                Some(v)
            }
            Err(e) => {
                tracing::warn!(file = %self.real.display(), error = %e, "ignoring a corrupt notifier file");
                None
            }
        }
    }

    /// Writes `v` unless the file already holds exactly it.
    pub fn save<T: Serialize>(&mut self, v: &T) -> Result<bool> {
        let text = serde_json::to_string_pretty(v)? + "\n";
        if self.written.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_atomic(&self.real, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", self.real.display()))?;
        self.written = Some(text);
        Ok(true)
    }
}
