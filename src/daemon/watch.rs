//! inotify watches on the directories of managed files.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use inotify::{EventStream, Inotify, WatchDescriptor, WatchMask};

use crate::config::LoadedConfig;
use crate::state::State;
use crate::sysroot::Sysroot;

/// Watches the parents of every managed path and reports changes to them.
pub struct Watcher {
    stream: EventStream<Vec<u8>>,
    /// Watched directory (real path) → its descriptor and the names of interest in it.
    dirs: BTreeMap<PathBuf, (WatchDescriptor, BTreeSet<OsString>)>,
}

fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::CREATE
        | WatchMask::ATTRIB
}

impl Watcher {
    /// A watcher with no watches yet.
    pub fn new() -> Result<Watcher> {
        let ino = Inotify::init().context("inotify_init")?;
        Ok(Watcher {
            stream: ino.into_event_stream(vec![0u8; 16 * 1024])?,
            dirs: BTreeMap::new(),
        })
    }

    /// Watches exactly the parents of what the state says sightline manages.
    pub fn sync(&mut self, root: &Sysroot, cfg: &LoadedConfig) -> Result<()> {
        let state = State::load(root, &cfg.config)?;
        let mut wanted: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
        for p in state.files.keys().chain(state.dirs.keys()) {
            let real = root.path(p);
            if let (Some(parent), Some(name)) = (real.parent(), real.file_name()) {
                wanted
                    .entry(parent.to_path_buf())
                    .or_default()
                    .insert(name.to_os_string());
            }
        }
        let mut watches = self.stream.watches();
        for (dir, (wd, _)) in std::mem::take(&mut self.dirs) {
            if !wanted.contains_key(&dir) {
                let _ = watches.remove(wd);
            } else {
                self.dirs.insert(dir, (wd, BTreeSet::new()));
            }
        }
        for (dir, names) in wanted {
            if !dir.is_dir() {
                continue;
            }
            let wd = watches
                .add(&dir, mask())
                .with_context(|| format!("watching {}", dir.display()))?;
            self.dirs.insert(dir, (wd, names));
        }
        Ok(())
    }

    fn relevant(&self, wd: &WatchDescriptor, name: Option<&OsString>) -> Option<PathBuf> {
        let name = name?;
        if name
            .to_string_lossy()
            .starts_with(crate::atomic::TEMP_PREFIX)
        {
            return None;
        }
        self.dirs
            .iter()
            .find(|(_, (d, names))| d == wd && names.contains(name))
            .map(|(dir, _)| dir.join(name))
    }

    /// Waits for the next event on a managed path; returns its real path.
    pub async fn next_relevant(&mut self) -> Result<PathBuf> {
        loop {
            let ev = self.stream.next().await.context("inotify stream ended")??;
            if let Some(p) = self.relevant(&ev.wd, ev.name.as_ref()) {
                return Ok(p);
            }
        }
    }

    /// Takes every event already queued, without waiting.
    pub fn drain(&mut self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let std::task::Poll::Ready(Some(Ok(ev))) = self.stream.poll_next_unpin(&mut cx) {
            if let Some(p) = self.relevant(&ev.wd, ev.name.as_ref()) {
                out.push(p);
            }
        }
        out
    }
}
