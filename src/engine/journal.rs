//! The k3s change journal: `/var/lib/sightline/k3s-journal.json`.
//!
//! Before sightline touches k3s's files with the intent to restart it, it
//! saves the previous files and writes this journal. If sightline dies
//! between the write and the readiness check, the next start finds the
//! journal and finishes the change or rolls it back, so k3s is never left
//! running (or crash-looping) on a half-done change.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic::{remove_file, symlink_atomic, write_atomic};
use crate::config::Config;
use crate::state::ManagedFile;
use crate::sysroot::Sysroot;

/// Where the change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Files are being written; k3s has not been restarted.
    Writing,
    /// Files are written; k3s is being restarted onto them.
    Restarting,
    /// The change failed; the previous files are being restored.
    RollingBack,
}

/// A file's content before the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// Host path of the saved copy.
    pub saved: String,
    /// Its mode.
    pub mode: u32,
    /// The link's target when the file was a symlink: restored as a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// One file in the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFile {
    /// Host path.
    pub path: String,
    /// The content before, or `None` when the file did not exist.
    pub previous: Option<Previous>,
}

/// The journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Transaction id (also the directory of saved files).
    pub id: String,
    /// Where it stands.
    pub phase: Phase,
    /// The k3s unit.
    pub unit: String,
    /// When the new files were written, µs since the epoch.
    pub written_at_us: u64,
    /// Files in the change.
    pub files: Vec<JournalFile>,
    /// What k3s had loaded before.
    pub previous_digest: Option<String>,
    /// What the change makes k3s load.
    pub new_digest: Option<String>,
    /// The state records of these files before the change.
    pub previous_records: BTreeMap<String, ManagedFile>,
}

/// Host path of the journal.
pub fn path(cfg: &Config) -> String {
    format!("{}/k3s-journal.json", cfg.paths.state_dir)
}

fn txn_dir(cfg: &Config, id: &str) -> String {
    format!("{}/txn/{id}", cfg.paths.state_dir)
}

impl Journal {
    /// Saves the current content of `paths` and records the journal before
    /// anything is changed.
    pub fn begin(
        root: &Sysroot,
        cfg: &Config,
        paths: &[String],
        previous_records: BTreeMap<String, ManagedFile>,
        previous_digest: Option<String>,
        new_digest: Option<String>,
    ) -> Result<Journal> {
        let id = format!(
            "{}-{}",
            crate::clock::now_rfc3339().replace(':', ""),
            std::process::id()
        );
        let mut files = Vec::new();
        for p in paths {
            let real = root.path(p);
            let previous = match std::fs::read(&real) {
                Ok(data) => {
                    let mode = std::fs::metadata(&real)?.permissions().mode() & 0o7777;
                    let saved = format!("{}{p}", txn_dir(cfg, &id));
                    write_atomic(&root.path(&saved), &data, mode)
                        .with_context(|| format!("saving {p}"))?;
                    let link = std::fs::read_link(&real)
                        .ok()
                        .map(|t| t.to_string_lossy().into_owned());
                    Some(Previous { saved, mode, link })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {p}")),
            };
            files.push(JournalFile {
                path: p.clone(),
                previous,
            });
        }
        let j = Journal {
            id,
            phase: Phase::Writing,
            unit: cfg.k3s.unit.clone(),
            written_at_us: 0,
            files,
            previous_digest,
            new_digest,
            previous_records,
        };
        j.save(root, cfg)?;
        Ok(j)
    }

    /// Loads an unfinished journal, if any.
    pub fn load(root: &Sysroot, cfg: &Config) -> Result<Option<Journal>> {
        let p = path(cfg);
        match root.read_to_string(&p)? {
            None => Ok(None),
            Some(t) => Ok(Some(
                serde_json::from_str(&t).with_context(|| format!("{p} is corrupt"))?,
            )),
        }
    }

    /// Persists the journal.
    pub fn save(&self, root: &Sysroot, cfg: &Config) -> Result<()> {
        super::failpoint::hit("journal.save.before");
        let text = serde_json::to_string_pretty(self)? + "\n";
        write_atomic(&root.path(path(cfg)), text.as_bytes(), 0o600)
            .context("writing the k3s journal")
    }

    /// Moves to a new phase and persists it.
    pub fn set_phase(&mut self, root: &Sysroot, cfg: &Config, phase: Phase) -> Result<()> {
        self.phase = phase;
        self.save(root, cfg)
    }

    /// Puts the previous files back exactly (content and mode), or removes
    /// files that did not exist. Returns the host paths touched.
    pub fn restore_previous(&self, root: &Sysroot) -> Result<Vec<String>> {
        let mut touched = Vec::new();
        for f in &self.files {
            let real = root.path(&f.path);
            match &f.previous {
                Some(Previous {
                    link: Some(target), ..
                }) => {
                    symlink_atomic(std::path::Path::new(target), &real)
                        .with_context(|| format!("restoring the link {}", f.path))?;
                }
                Some(prev) => {
                    let data = root
                        .read(&prev.saved)?
                        .with_context(|| format!("saved copy {} is missing", prev.saved))?;
                    write_atomic(&real, &data, prev.mode)
                        .with_context(|| format!("restoring {}", f.path))?;
                }
                None => {
                    remove_file(&real).with_context(|| format!("removing {}", f.path))?;
                }
            }
            touched.push(f.path.clone());
            super::failpoint::hit("journal.restore.after");
        }
        Ok(touched)
    }

    /// Copies the current (rejected) files to a directory for inspection and
    /// returns its host path.
    pub fn keep_rejected(&self, root: &Sysroot, cfg: &Config) -> Result<String> {
        let dir = format!("{}/rejected/{}", cfg.paths.state_dir, self.id);
        for f in &self.files {
            if let Some(data) = root.read(&f.path)? {
                write_atomic(&root.path(format!("{dir}{}", f.path)), &data, 0o600)?;
            }
        }
        Ok(dir)
    }

    /// Ends the transaction: removes the journal and the saved copies.
    pub fn finish(self, root: &Sysroot, cfg: &Config) -> Result<()> {
        super::failpoint::hit("journal.finish.before");
        remove_file(&root.path(path(cfg)))?;
        let dir = root.path(txn_dir(cfg, &self.id));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }
}
