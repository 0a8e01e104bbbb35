//! The one place where host paths become real paths.
//!
//! Every file sightline reads or writes is named by its *host path* (as it is
//! on the node, e.g. `/etc/rancher/k3s/audit-policy.yaml`) and resolved
//! through a [`Sysroot`]. Tests point the sysroot at a scratch directory that
//! looks like a Raspberry Pi or a Flatcar VM; production uses `/`.

use std::path::{Component, Path, PathBuf};

/// A root directory under which all host paths are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysroot {
    root: PathBuf,
}

impl Sysroot {
    /// A sysroot at `root`. `/` means the running machine.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this sysroot is the running machine's `/`.
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Resolves a host path (absolute, as seen on the node) under the root.
    ///
    /// `..` components are dropped rather than followed, so a host path can
    /// never escape the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.root.clone();
        for c in host_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    /// Maps a real path back to its host path, if it lies under the root.
    pub fn host_path(&self, real: &Path) -> Option<PathBuf> {
        let rel = real.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// Reads a host file as UTF-8 text; `None` when it does not exist.
    pub fn read_to_string(&self, host_path: impl AsRef<Path>) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.path(host_path)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a host file's bytes; `None` when it does not exist.
    pub fn read(&self, host_path: impl AsRef<Path>) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(host_path)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True when the host path exists (following symlinks).
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.path(host_path).exists()
    }
}

impl Default for Sysroot {
    fn default() -> Self {
        Self::new("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_never_escapes() {
        let r = Sysroot::new("/tmp/x");
        assert_eq!(
            r.path("/etc/os-release"),
            PathBuf::from("/tmp/x/etc/os-release")
        );
        assert_eq!(
            r.path("/../../etc/passwd"),
            PathBuf::from("/tmp/x/etc/passwd")
        );
        assert_eq!(r.path("etc/a/../b"), PathBuf::from("/tmp/x/etc/a/b"));
        assert_eq!(
            r.host_path(Path::new("/tmp/x/var/lib/sightline")),
            Some(PathBuf::from("/var/lib/sightline"))
        );
        assert_eq!(r.host_path(Path::new("/elsewhere")), None);
    }

    #[test]
    fn host_root() {
        assert!(Sysroot::default().is_host());
        assert_eq!(Sysroot::default().path("/etc/x"), PathBuf::from("/etc/x"));
    }
}
