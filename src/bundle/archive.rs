//! Loading and verifying the bundle archive.
//!
//! Every file is checked against `SHA256SUMS`, and `SHA256SUMS` against the
//! digest compiled into this binary, before anything is used. A bundle that
//! does not match is refused as a whole.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::sysroot::Sysroot;

/// The bundle built into this binary.
pub const EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bundle.tar"));
/// SHA-256 of the embedded bundle's `SHA256SUMS`.
pub const PINNED_SUMS_SHA256: &str = env!("SIGHTLINE_BUNDLE_SUMS_SHA256");

/// Where a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// Compiled into the binary.
    Embedded,
    /// A file (host path).
    File(String),
}

impl std::fmt::Display for BundleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleSource::Embedded => f.write_str("built into the binary"),
            BundleSource::File(p) => f.write_str(p),
        }
    }
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
    /// Where it came from.
    pub source: BundleSource,
    /// SHA-256 of its SHA256SUMS: identifies the bundle.
    pub digest: String,
}

impl Bundle {
    /// The bundle at `[bundle] path` if that file exists under the root,
    /// otherwise the embedded one; verified either way.
    pub fn load(root: &Sysroot, cfg: &Config) -> Result<Bundle> {
        match root
            .read(&cfg.bundle.path)
            .with_context(|| format!("reading {}", cfg.bundle.path))?
        {
            Some(data) => Self::from_tar(&data, BundleSource::File(cfg.bundle.path.clone())),
            None => Self::embedded(),
        }
    }

    /// Refuses a bundle file that does not verify, without keeping it. The
    /// embedded bundle is the binary's own bytes, pinned at build time, so
    /// it needs no check; a file is hashed once per version of it: the
    /// verdict is remembered on tmpfs (`marker`, a host path) with the
    /// file's identity, so a re-check that finds nothing changed costs a
    /// `stat`, not a hash of every file in it.
    pub fn check(root: &Sysroot, cfg: &Config, marker: &str) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let path = &cfg.bundle.path;
        let meta = match std::fs::metadata(root.resolve(path)) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        };
        let identity = format!(
            "{path} {} {} {} {} {PINNED_SUMS_SHA256}\n",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        );
        if root.read(marker).ok().flatten().as_deref() == Some(identity.as_bytes()) {
            return Ok(());
        }
        Self::load(root, cfg)?;
        crate::atomic::write_if_changed(
            &root.path(marker),
            identity.as_bytes(),
            0o644,
            crate::atomic::Durability::Volatile,
        )
        .with_context(|| format!("writing {marker}"))?;
        Ok(())
    }

    /// The embedded bundle.
    pub fn embedded() -> Result<Bundle> {
        Self::from_tar(EMBEDDED, BundleSource::Embedded)
    }

    /// Verifies an archive.
    pub fn from_tar(data: &[u8], source: BundleSource) -> Result<Bundle> {
        let refuse = |why: String| -> anyhow::Error {
            anyhow::anyhow!(
                "bundle {source} is refused: {why}. Nothing from it is used. Reinstall the sightline package (or remove [bundle] path) to get a matching bundle"
            )
        };
        let mut files = BTreeMap::new();
        let mut ar = tar::Archive::new(data);
        for entry in ar
            .entries()
            .map_err(|e| refuse(format!("not a tar archive ({e})")))?
        {
            let mut entry = entry.map_err(|e| refuse(format!("unreadable entry ({e})")))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(refuse(format!(
                    "{} is not a regular file",
                    entry.path()?.display()
                )));
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(refuse(format!("{path} escapes the bundle")));
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            if files.insert(path.clone(), buf).is_some() {
                return Err(refuse(format!("{path} appears twice")));
            }
        }
        let sums = files
            .remove("SHA256SUMS")
            .ok_or_else(|| refuse("it has no SHA256SUMS".into()))?;
        let digest = hex::encode(Sha256::digest(&sums));
        if digest != PINNED_SUMS_SHA256 {
            return Err(refuse(format!(
                "its SHA256SUMS digest {digest} is not the one this sightline {} was built with ({PINNED_SUMS_SHA256})",
                env!("CARGO_PKG_VERSION")
            )));
        }
        let sums =
            std::str::from_utf8(&sums).map_err(|_| refuse("SHA256SUMS is not text".into()))?;
        let mut listed = BTreeMap::new();
        for line in sums.lines() {
            let (hash, path) = line
                .split_once("  ")
                .ok_or_else(|| refuse(format!("bad SHA256SUMS line {line:?}")))?;
            listed.insert(path.to_string(), hash.to_string());
        }
        for (path, data) in &files {
            let want = listed
                .get(path)
                .ok_or_else(|| refuse(format!("{path} is not listed in SHA256SUMS")))?;
            let got = hex::encode(Sha256::digest(data));
            if &got != want {
                return Err(refuse(format!(
                    "{path} has digest {got}, SHA256SUMS says {want}"
                )));
            }
        }
        if let Some(missing) = listed.keys().find(|p| !files.contains_key(*p)) {
            return Err(refuse(format!("{missing} is listed but missing")));
        }
        Ok(Bundle {
            files,
            source,
            digest,
        })
    }

    /// A file's bytes.
    pub fn file(&self, path: &str) -> Result<&[u8]> {
        self.files
            .get(path)
            .map(Vec::as_slice)
            .with_context(|| format!("the bundle has no {path}"))
    }

    /// A file as text.
    pub fn text(&self, path: &str) -> Result<&str> {
        std::str::from_utf8(self.file(path)?)
            .with_context(|| format!("bundle file {path} is not UTF-8"))
    }

    /// Every path in the bundle.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The stage index.
    pub fn index(&self) -> Result<super::Index> {
        super::index::parse(self.text("index.toml")?)
    }
}

/// Verifies an archive and reports what it holds (for `sightline bundle verify`).
pub fn verify_file(path: &std::path::Path) -> Result<Bundle> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let b = Bundle::from_tar(&data, BundleSource::File(path.display().to_string()))?;
    if b.index().is_err() {
        bail!(
            "{} verifies but its index.toml does not parse",
            path.display()
        );
    }
    Ok(b)
}
