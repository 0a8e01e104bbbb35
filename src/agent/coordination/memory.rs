//! What a server remembers between cluster passes, so a pass at rest costs
//! one round trip: the Lease it last wrote (renewed with one PUT), the
//! ConfigMap as it last wrote or read it while holding the Lease, and the
//! digest of the cluster's credentials once they are stored locally.
//!
//! The daemon keeps all three in the process. `sightline apply` is a new
//! process each time, so it keeps only the Lease, in `run_dir` (tmpfs: a
//! reboot forgets it, as the Lease's own duration would).

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::k3s::configmap::DataMap;
use crate::k3s::lease::Lease;
use crate::sysroot::Sysroot;

/// The file `sightline apply` keeps its Lease copy in, under `run_dir`.
const LEASE_FILE: &str = "cluster-lease.json";

#[derive(Debug, Default)]
struct Remembered {
    lease: Option<Lease>,
    record: Option<DataMap>,
    secrets: Option<String>,
}

/// Shared by a pass and the renewals during its rollout; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    inner: Arc<Mutex<Remembered>>,
    on_tmpfs: bool,
}

impl Memory {
    /// For the daemon: everything, in the process.
    pub fn in_process() -> Memory {
        Memory::default()
    }

    /// For one command: the Lease only, in `run_dir`.
    pub fn on_tmpfs() -> Memory {
        Memory {
            on_tmpfs: true,
            ..Memory::default()
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Remembered) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn lease_path(root: &Sysroot, cfg: &Config) -> std::path::PathBuf {
        root.path(format!("{}/{LEASE_FILE}", cfg.paths.run_dir))
    }

    /// The Lease as this node last wrote or read it.
    pub(super) fn lease(&self, root: &Sysroot, cfg: &Config) -> Option<Lease> {
        if let Some(l) = self.with(|m| m.lease.clone()) {
            return Some(l);
        }
        if !self.on_tmpfs {
            return None;
        }
        // A copy that does not parse is only a lost fast path.
        let text = std::fs::read(Self::lease_path(root, cfg)).ok()?;
        let l: Lease = serde_json::from_slice(&text).ok()?;
        self.with(|m| m.lease = Some(l.clone()));
        Some(l)
    }

    /// Remembers the Lease as the apiserver answered it. On tmpfs only
    /// while `me` holds it: a follower has no use for the copy, and
    /// rewriting it at each of the holder's renewals would be a write for
    /// nothing.
    pub(super) fn set_lease(&self, root: &Sysroot, cfg: &Config, me: &str, lease: &Lease) {
        self.with(|m| m.lease = Some(lease.clone()));
        if !self.on_tmpfs {
            return;
        }
        let path = Self::lease_path(root, cfg);
        if lease.spec.holder_identity.as_deref() != Some(me) {
            if path.exists() {
                let _ = crate::atomic::remove_file(&path);
            }
            return;
        }
        let written = crate::atomic::create_dir_all(
            path.parent()
                .expect("run_dir/cluster-lease.json has a parent"),
            0o755,
        )
        .and_then(|()| {
            crate::atomic::write_atomic(
                &path,
                &serde_json::to_vec(lease).expect("serializable"),
                0o644,
            )
        });
        if let Err(e) = written {
            tracing::debug!(error = %e, path = %path.display(), "could not keep the Lease copy; the next pass reads the Lease");
        }
    }

    /// The ConfigMap as written or read while this node held the Lease.
    pub(super) fn record(&self) -> Option<DataMap> {
        self.with(|m| m.record.clone())
    }

    /// Remembers the ConfigMap (the daemon only: a command's next run is
    /// another process).
    pub(super) fn set_record(&self, map: Option<&DataMap>) {
        if !self.on_tmpfs {
            self.with(|m| m.record = map.cloned());
        }
    }

    /// The digest of the cluster's credentials as last stored here.
    pub(super) fn secrets(&self) -> Option<String> {
        self.with(|m| m.secrets.clone())
    }

    /// Remembers that the cluster's credentials, of this digest, are stored here.
    pub(super) fn set_secrets(&self, digest: Option<String>) {
        if !self.on_tmpfs {
            self.with(|m| m.secrets = digest);
        }
    }

    /// After a failed pass: read everything again next time.
    pub fn forget(&self, root: &Sysroot, cfg: &Config) {
        self.with(|m| *m = Remembered::default());
        if self.on_tmpfs {
            let _ = crate::atomic::remove_file(&Self::lease_path(root, cfg));
        }
    }
}
