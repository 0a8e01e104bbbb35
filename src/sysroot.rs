//! The one place where host paths become real paths.
//!
//! Every file sightline reads or writes is named by its *host path* (as it is
//! on the node, e.g. `/etc/rancher/k3s/audit-policy.yaml`) and resolved
//! through a [`Sysroot`]. Tests point the sysroot at a scratch directory that
//! looks like a Raspberry Pi or a Flatcar VM; production uses `/`.
//!
//! Under a root other than `/` (an SD card or image prepared offline with
//! `--root /mnt/image`), every symlink on the way is resolved *inside* the
//! root, the way `openat2(RESOLVE_IN_ROOT)` does: an absolute target is
//! re-rooted (`/lib -> usr/lib` and `/etc/rancher -> /tmp/elsewhere` both stay
//! in the image) and `..` stops at the root. Without it, an absolute link in an
//! image would make sightline write onto the machine that prepares it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`);
/// past it the kernel answers ELOOP, and so do we.
const MAX_SYMLINKS: u32 = 40;

/// The largest file [`read_regular`] accepts. Only regular files are read
/// at all (so `/dev/zero` is refused by type); the bound is generous because
/// the same reader loads the bundle and air-gapped chart archives, and only
/// stops a runaway file from taking the memory.
pub const MAX_SMALL_FILE: u64 = 256 << 20;

/// A root directory under which all host paths are resolved.
#[derive(Debug, Clone)]
pub struct Sysroot {
    root: PathBuf,
    /// Real directories under a non-host root already seen not to be
    /// symlinks: resolving every path component by component would
    /// otherwise cost a `lstat` per component per path, several hundred per
    /// converge. Only plain directories are remembered; a link is looked at
    /// every time.
    /// Kept as bytes, not `PathBuf`: hashing a `Path` parses it into
    /// components, which cost more than the lookup saves.
    plain_dirs: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<OsString>>>,
}

impl PartialEq for Sysroot {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Eq for Sysroot {}

impl Sysroot {
    /// A sysroot at `root`. `/` means the running machine.
    ///
    /// The root is made absolute and normalised lexically; it is the host,
    /// with the host's checks (root user, real systemd effects), when it is
    /// the host's `/` by identity (`/.`, `/tmp/x/../..`, a link to `/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = root.into();
        let root = match std::env::current_dir() {
            Ok(cwd) if root.is_relative() => normalize(&cwd.join(root)),
            _ => normalize(&root),
        };
        // The host's `/` however it is spelt (`/.`, `/tmp/x/../..`, a link
        // to `/`) is the host, with the host's checks. The test is the
        // directory's identity, not a canonicalised path: canonicalising
        // follows magic links, and `/proc/PID/root` of a container would
        // read as the host's `/`.
        let root = if root != Path::new("/") && same_dir(&root, Path::new("/")) {
            PathBuf::from("/")
        } else {
            root
        };
        Self {
            root,
            plain_dirs: Default::default(),
        }
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
    /// Every directory on the way is resolved inside the root (symlinks
    /// included); the last component is not followed, so a rename onto the
    /// result replaces a symlink there, as it does on the host, and
    /// `read_link` still sees it. Use [`Sysroot::resolve`] to follow it too.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        self.resolve_with(host_path.as_ref(), false)
    }

    /// [`Sysroot::path`], following a symlink in the last component too
    /// (inside the root): the path to open for reading.
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> PathBuf {
        self.resolve_with(host_path.as_ref(), true)
    }

    fn resolve_with(&self, host_path: &Path, follow_last: bool) -> PathBuf {
        if self.is_host() {
            return normalize(&Path::new("/").join(host_path));
        }
        match self.walk(host_path, follow_last, false) {
            Ok(real) => real,
            // A loop, or a link that cannot be read. Returning the path as
            // it stands would let the kernel follow an absolute link out of
            // the root; a NUL byte makes every filesystem call on it fail.
            Err(()) => self.root.join("symlink loop\0"),
        }
    }

    /// The host path with every symlink on the way followed inside the
    /// root, spelt one way (no `.`, `..` or links); `None` when a component
    /// is missing or the links loop. Two host paths name the same file
    /// exactly when their canonical forms are equal.
    pub fn canonical(&self, host_path: impl AsRef<Path>) -> Option<String> {
        let host_path = host_path.as_ref();
        if self.is_host() {
            return std::fs::canonicalize(host_path)
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
        }
        let real = self.walk(host_path, true, true).ok()?;
        let rel = real.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.to_string_lossy()))
    }

    /// Walks `host_path` component by component inside the root, following
    /// links (the last one only when `follow_last`), the way
    /// `openat2(RESOLVE_IN_ROOT)` does, and returns the real path. A
    /// missing component is taken as is, unless `existing`. `Err` on a
    /// loop, or on a missing component when `existing`.
    fn walk(&self, host_path: &Path, follow_last: bool, existing: bool) -> Result<PathBuf, ()> {
        if let Some(real) = self.walk_known(host_path, follow_last, existing) {
            return Ok(real);
        }
        let mut pending: VecDeque<Component<'_>> = host_path.components().collect();
        let mut pending_owned: VecDeque<OsString> = VecDeque::new();
        // The real path so far, and how many components it has below the
        // root (`..` stops at the root).
        let mut real = self.root.clone();
        let mut depth = 0usize;
        let mut links = 0u32;
        // The depth of a component found missing: nothing below it can be a
        // link (or exist at all), so what follows is taken as spelt, with
        // no more lookups, until a `..` climbs back above it.
        let mut missing_at: Option<usize> = None;
        loop {
            let part = match pending_owned.pop_front() {
                Some(p) => p,
                None => match pending.pop_front() {
                    Some(Component::Normal(p)) => p.to_os_string(),
                    Some(Component::ParentDir) => OsString::from(".."),
                    Some(_) => continue,
                    None => break,
                },
            };
            if part == ".." {
                if depth > 0 {
                    real.pop();
                    depth -= 1;
                }
                if missing_at.is_some_and(|at| depth < at) {
                    missing_at = None;
                }
                continue;
            }
            if part == "." || part.is_empty() {
                continue;
            }
            real.push(&part);
            depth += 1;
            let last = pending_owned.is_empty() && pending.is_empty();
            if last && !follow_last {
                continue;
            }
            if missing_at.is_some() || (!last && self.known_plain(&real)) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&real) {
                Ok(m) => m,
                Err(_) if existing => return Err(()),
                Err(_) => {
                    missing_at = Some(depth);
                    continue;
                }
            };
            if !meta.file_type().is_symlink() {
                if meta.is_dir() {
                    self.remember_plain(&real);
                }
                continue;
            }
            let target = match std::fs::read_link(&real) {
                Ok(t) => t,
                Err(_) if existing => return Err(()),
                Err(_) => continue,
            };
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(());
            }
            real.pop();
            depth -= 1;
            if target.is_absolute() {
                real = self.root.clone();
                depth = 0;
            }
            let mut expanded: VecDeque<OsString> = target
                .components()
                .filter_map(|c| match c {
                    Component::Normal(p) => Some(p.to_os_string()),
                    Component::ParentDir => Some(OsString::from("..")),
                    _ => None,
                })
                .collect();
            expanded.extend(pending_owned.drain(..));
            pending_owned = expanded;
        }
        Ok(real)
    }

    /// The walk's shortcut for a plainly spelt path whose directory is
    /// already known to be a real directory: every directory the walk marks
    /// plain was reached through real directories only, so the path maps
    /// to itself under the root and only its last component is looked at
    /// (when it is followed). `None` when the full walk is needed.
    fn walk_known(&self, host_path: &Path, follow_last: bool, existing: bool) -> Option<PathBuf> {
        let text = host_path.as_os_str().as_encoded_bytes();
        let plain = text.first() == Some(&b'/')
            && text.last() != Some(&b'/')
            && !text.windows(2).any(|w| w == b"//")
            && !text.split(|b| *b == b'/').any(|c| c == b"." || c == b"..");
        if !plain {
            return None;
        }
        let parent = host_path.parent()?;
        let mut real = self.root.clone();
        real.push(parent.strip_prefix("/").ok()?);
        if parent != Path::new("/") && !self.known_plain(&real) {
            return None;
        }
        real.push(host_path.file_name()?);
        if follow_last {
            match std::fs::symlink_metadata(&real) {
                Ok(m) if m.file_type().is_symlink() => return None,
                Ok(m) => {
                    if m.is_dir() {
                        self.remember_plain(&real);
                    }
                }
                Err(_) if existing => return None,
                Err(_) => {}
            }
        }
        Some(real)
    }

    fn known_plain(&self, real: &Path) -> bool {
        self.plain_dirs
            .lock()
            .is_ok_and(|set| set.contains(real.as_os_str()))
    }

    fn remember_plain(&self, real: &Path) {
        if let Ok(mut set) = self.plain_dirs.lock() {
            set.insert(real.as_os_str().to_os_string());
        }
    }

    /// Maps a real path back to its host path, if it lies under the root.
    pub fn host_path(&self, real: &Path) -> Option<PathBuf> {
        let rel = real.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rel))
    }

    /// Reads a host file as UTF-8 text; `None` when it does not exist.
    ///
    /// Only a regular file is read (see [`read_regular`]); the error of a
    /// file that is not UTF-8 says where the first bad byte is.
    pub fn read_to_string(&self, host_path: impl AsRef<Path>) -> io::Result<Option<String>> {
        match self.read(host_path)? {
            None => Ok(None),
            Some(bytes) => utf8(bytes).map(Some),
        }
    }

    /// Reads a host file's bytes; `None` when it does not exist. Only a
    /// regular file is read (see [`read_regular`]).
    pub fn read(&self, host_path: impl AsRef<Path>) -> io::Result<Option<Vec<u8>>> {
        match read_regular(&self.resolve(host_path)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True when the host path exists (following symlinks inside the root).
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.resolve(host_path).exists()
    }
}

impl Default for Sysroot {
    fn default() -> Self {
        Self::new("/")
    }
}

/// A host path spelled one way: `//`, `/./` and a trailing `/` removed, so
/// two settings naming one file compare equal. For paths already checked to
/// be absolute without `..`.
pub fn normalize_host_path(p: &str) -> String {
    // Most paths are already spelt so; checking is cheaper than rebuilding.
    let plain = p.starts_with('/')
        && (p == "/" || !p.ends_with('/'))
        && !p.contains("//")
        && !p.contains("/./")
        && !p.ends_with("/.");
    if plain {
        return p.to_string();
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// `..` and `.` removed lexically, for a root that does not exist (yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Reads a small regular file, never blocking on anything else.
///
/// The one helper for config files, drop-ins, `policy_source` and the sysfs
/// and proc values in facts: a FIFO named in any of them used to hang
/// sightline forever in `open()`. The file is opened with `O_NONBLOCK` (so
/// opening a FIFO returns at once) and `fstat`ed before one byte is read;
/// anything but a regular file is refused with `InvalidInput`, naming what it
/// is. Reads stop at [`MAX_SMALL_FILE`]; proc files report size 0 and are
/// read to their end.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file but {}", kind_name(kind)),
        ));
    }
    read_bounded(file, meta.len())
}

/// Reads to the end, at most [`MAX_SMALL_FILE`] bytes. Room for `size`
/// (what `fstat` said) is made first, so a small file comes in one `read`
/// (std's first read is up to 8 KiB) rather than in doubling steps from 32
/// bytes. proc files say 0 and start with a page; a file `fstat` already
/// shows too large is refused before anything is read or reserved.
fn read_bounded(file: File, size: u64) -> io::Result<Vec<u8>> {
    if size > MAX_SMALL_FILE {
        return Err(too_large());
    }
    let room = if size == 0 { 4096 } else { size + 1 };
    let mut out = Vec::new();
    out.try_reserve_exact(room as usize)
        .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    file.take(MAX_SMALL_FILE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_SMALL_FILE {
        return Err(too_large());
    }
    Ok(out)
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {MAX_SMALL_FILE} bytes"),
    )
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_string(path: &Path) -> io::Result<String> {
    utf8(read_regular(path)?)
}

/// UTF-8 text, or an error giving the line and column of the first bad byte
/// (a non-UTF-8 byte in a config was reported at 1:1).
pub fn utf8(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let (line, col) = line_col(e.as_bytes(), at);
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8: invalid byte at line {line}, column {col}"),
        )
    })
}

/// 1-based line and column (in characters) of byte offset `at`, counting
/// only the valid text before it.
pub fn line_col(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = String::from_utf8_lossy(&bytes[..at.min(bytes.len())]);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn kind_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// True when both paths name the same directory (device and inode).
fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.is_dir() && x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
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
        assert_eq!(r.path("etc/a/../b"), PathBuf::from("/tmp/x/etc/b"));
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

    #[test]
    fn dotted_roots_are_the_host() {
        assert!(Sysroot::new("/.").is_host());
        assert!(Sysroot::new("/tmp/../..").is_host());
        assert!(Sysroot::new("/nonexistent-sightline/../").is_host());
        assert!(!Sysroot::new("/tmp").is_host());
    }

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = Sysroot::new(root.path());
        let base = r.root().to_path_buf();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(base.join("usr/lib")).unwrap();
        // An escaping link, as an attacker or a careless image would have it.
        std::os::unix::fs::symlink(outside.path(), base.join("etc/rancher")).unwrap();
        // The image's own absolute links keep working, re-rooted.
        std::os::unix::fs::symlink("/usr/lib", base.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../..", base.join("usr/lib/up")).unwrap();
        let p = r.path("/etc/rancher/k3s/audit-policy.yaml");
        let out = std::fs::canonicalize(outside.path()).unwrap();
        assert!(!p.starts_with(&out), "{p:?} escaped to {out:?}");
        assert_eq!(
            p,
            out_of(&base, outside.path()).join("k3s/audit-policy.yaml")
        );
        assert_eq!(r.path("/lib/os-release"), base.join("usr/lib/os-release"));
        assert_eq!(r.path("/lib/up/etc/x"), base.join("etc/x"));
        // The last component is not followed by path(), but is by resolve().
        assert_eq!(r.path("/lib"), base.join("lib"));
        assert_eq!(r.resolve("/lib"), base.join("usr/lib"));
    }

    #[test]
    fn a_file_fstat_shows_too_large_is_refused_before_it_is_read() {
        // A sparse file: fstat says MAX_SMALL_FILE + 1 bytes, none on disk.
        // Reserving room for it (or reading it) first would take 256 MiB.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("huge");
        File::create(&p)
            .unwrap()
            .set_len(MAX_SMALL_FILE + 1)
            .unwrap();
        let e = read_regular(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than"), "{e}");
        // At the limit it is read, whole.
        let small = d.path().join("small");
        std::fs::write(&small, b"k3s").unwrap();
        assert_eq!(read_regular(&small).unwrap(), b"k3s");
    }

    #[test]
    fn a_link_after_climbing_out_of_a_missing_directory_stays_inside() {
        // Below a missing component nothing is looked up; a `..` that climbs
        // back out must look again, or the link after it would be left for
        // the kernel to follow out of the root.
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = Sysroot::new(root.path());
        let base = r.root().to_path_buf();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), base.join("etc/out")).unwrap();
        let p = r.resolve("/etc/missing/deeper/../../out/x");
        assert_eq!(p, out_of(&base, outside.path()).join("x"));
        // Below the missing directory the spelling is kept as it is.
        assert_eq!(
            r.resolve("/etc/missing/out/x"),
            base.join("etc/missing/out/x")
        );
        assert_eq!(r.canonical("/etc/missing/x"), None);
    }

    /// Where an absolute link target lands once re-rooted.
    fn out_of(base: &Path, target: &Path) -> PathBuf {
        let mut p = base.to_path_buf();
        p.extend(target.components().skip(1));
        p
    }

    #[test]
    fn canonical_follows_links_inside_the_root_and_needs_every_component() {
        let d = tempfile::tempdir().unwrap();
        let r = Sysroot::new(d.path());
        std::fs::create_dir_all(r.root().join("usr/lib/systemd/system")).unwrap();
        std::fs::write(r.root().join("usr/lib/systemd/system/k3s.service"), "").unwrap();
        std::os::unix::fs::symlink("usr/lib", r.root().join("lib")).unwrap();
        std::fs::create_dir_all(r.root().join("etc/systemd/system")).unwrap();
        // An absolute target is re-rooted, never the host's.
        std::os::unix::fs::symlink(
            "/lib/systemd/system/k3s.service",
            r.root().join("etc/systemd/system/k3s.service"),
        )
        .unwrap();
        assert_eq!(
            r.canonical("/etc/systemd/system/k3s.service").as_deref(),
            Some("/usr/lib/systemd/system/k3s.service")
        );
        assert_eq!(
            r.canonical("/etc/systemd/../systemd/./system//k3s.service")
                .as_deref(),
            Some("/usr/lib/systemd/system/k3s.service")
        );
        assert_eq!(r.canonical("/").as_deref(), Some("/"));
        assert_eq!(r.canonical("/lib/systemd/absent.service"), None);
        std::os::unix::fs::symlink("/b", r.root().join("a")).unwrap();
        std::os::unix::fs::symlink("/a", r.root().join("b")).unwrap();
        assert_eq!(r.canonical("/a"), None);
    }

    #[test]
    fn host_paths_are_spelt_one_way() {
        for (given, want) in [
            (
                "/etc/rancher/k3s/config.yaml",
                "/etc/rancher/k3s/config.yaml",
            ),
            ("/etc//rancher/./k3s/", "/etc/rancher/k3s"),
            ("/etc/rancher/.", "/etc/rancher"),
            ("/", "/"),
            ("//", "/"),
            ("/.", "/"),
            ("etc/x", "/etc/x"),
        ] {
            assert_eq!(normalize_host_path(given), want, "{given}");
        }
    }

    #[test]
    fn symlink_loops_end() {
        let root = tempfile::tempdir().unwrap();
        let r = Sysroot::new(root.path());
        std::os::unix::fs::symlink("/b", r.root().join("a")).unwrap();
        std::os::unix::fs::symlink("/a", r.root().join("b")).unwrap();
        assert!(r.path("/a/x").starts_with(r.root()));
        assert!(r.read("/a/x").is_err());
    }

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_regular(&fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_regular(d.path()).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        std::fs::write(d.path().join("f"), "x").unwrap();
        assert_eq!(read_regular(&d.path().join("f")).unwrap(), b"x");
    }

    #[test]
    fn non_utf8_reports_line_and_column() {
        let e = utf8(b"a = 1\nbb = \"\xff\"\n".to_vec()).unwrap_err();
        assert!(e.to_string().contains("line 2, column 7"), "{e}");
    }
}
