//! systemd unit files found the way systemd finds them, for a root without a
//! bus (a `--root` fixture, an image): the full search path, drop-ins, wants
//! symlinks, and symlinks resolved inside the root rather than on the host.

use std::collections::BTreeMap;
use std::path::Path;

use crate::sysroot::Sysroot;

/// The system unit search path, highest priority first, as
/// `systemd-analyze unit-paths` prints it for systemd 252 (Debian 12 build,
/// 252.39-1~deb12u2; upstream `src/basic/path-lookup.c`). On merged-/usr
/// systems (Flatcar, Ubuntu) `/lib` is a link to `/usr/lib`, so the order
/// of the last two data directories does not matter there.
pub const SEARCH_PATH: [&str; 13] = [
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
];

/// A unit file as systemd would load it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Unit name, e.g. `k3s.service`.
    pub name: String,
    /// Host path of the fragment after following symlinks inside the root.
    pub fragment: String,
    /// Host paths of the `.conf` drop-ins, in the order systemd applies them.
    pub dropins: Vec<String>,
    /// A `*.wants/`, `*.requires/` or `*.upholds/` link pulls it in at boot.
    pub enabled: bool,
}

/// Resolves a host path inside the root, following every symlink (absolute
/// targets are taken relative to the root, never the host). `None` when a
/// component is missing or the links loop.
pub fn resolve(root: &Sysroot, host_path: &str) -> Option<String> {
    root.canonical(host_path)
}

/// True when the host path is a link to `/dev/null`: a masked unit.
fn masked(root: &Sysroot, host_path: &str) -> bool {
    std::fs::read_link(root.path(host_path)).is_ok_and(|t| t == Path::new("/dev/null"))
}

/// The search path as found under one root: each directory that exists,
/// resolved inside the root, with its entries. Read once per detection, so
/// that looking up several units and their drop-ins costs no more syscalls
/// than listing the directories.
pub struct SearchPath {
    /// (host directory as named in [`SEARCH_PATH`], its entries: name and
    /// whether it is a directory, following links inside the root).
    dirs: Vec<(&'static str, Vec<(String, bool)>)>,
}

impl SearchPath {
    /// Lists every search-path directory under the root.
    pub fn read(root: &Sysroot) -> SearchPath {
        let dirs = SEARCH_PATH
            .iter()
            .filter_map(|dir| {
                let real = resolve(root, dir)?;
                let rd = std::fs::read_dir(root.path(&real)).ok()?;
                let entries = rd
                    .flatten()
                    .map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let is_dir = match e.file_type() {
                            Ok(t) if t.is_symlink() => resolve(root, &format!("{dir}/{n}"))
                                .is_some_and(|t| root.path(t).is_dir()),
                            Ok(t) => t.is_dir(),
                            Err(_) => false,
                        };
                        (n, is_dir)
                    })
                    .collect();
                Some((*dir, entries))
            })
            .collect();
        SearchPath { dirs }
    }

    fn has(&self, dir: &str, name: &str) -> bool {
        self.dirs
            .iter()
            .any(|(d, es)| *d == dir && es.iter().any(|(n, _)| n == name))
    }

    /// The unit named `name`, from the first search-path directory that has
    /// it. A masked unit counts as absent: systemd will not start it.
    pub fn find(&self, root: &Sysroot, name: &str) -> Option<UnitFile> {
        let dir = self
            .dirs
            .iter()
            .find(|(_, es)| es.iter().any(|(n, d)| n == name && !d))?
            .0;
        let path = format!("{dir}/{name}");
        if masked(root, &path) {
            return None;
        }
        let fragment = resolve(root, &path)?;
        if !root.path(&fragment).is_file() {
            return None;
        }
        Some(UnitFile {
            name: name.to_string(),
            fragment,
            dropins: self.dropins(root, name),
            enabled: self.enabled(root, name),
        })
    }

    /// Names of unit files anywhere in the search path that `matches`
    /// accepts.
    pub fn names(&self, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .dirs
            .iter()
            .flat_map(|(_, es)| es.iter())
            .filter(|(n, is_dir)| !is_dir && matches(n))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Drop-ins of a unit: every `*.conf` in its drop-in directories across
    /// the search path; a name in a higher-priority directory hides the same
    /// name in a lower one; all are applied in lexical order of file name.
    pub fn dropins(&self, root: &Sysroot, name: &str) -> Vec<String> {
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        for dir_name in dropin_dir_names(name) {
            for (dir, _) in &self.dirs {
                if !self.has(dir, &dir_name) {
                    continue;
                }
                let host = format!("{dir}/{dir_name}");
                let Some(real) = resolve(root, &host) else {
                    continue;
                };
                let Ok(rd) = std::fs::read_dir(root.path(&real)) else {
                    continue;
                };
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let path = format!("{host}/{n}");
                    if n.ends_with(".conf") && !by_name.contains_key(&n) && !masked(root, &path) {
                        if let Some(target) = resolve(root, &path) {
                            by_name.insert(n, target);
                        }
                    }
                }
            }
        }
        by_name.into_values().collect()
    }

    /// True when a `*.wants/`, `*.requires/` or `*.upholds/` directory
    /// anywhere in the search path links the unit: how `systemctl enable`
    /// and the bakery's Butane snippet (a link in `multi-user.target.wants`)
    /// enable it.
    pub fn enabled(&self, root: &Sysroot, name: &str) -> bool {
        self.dirs.iter().any(|(dir, es)| {
            es.iter().any(|(n, is_dir)| {
                *is_dir
                    && [".wants", ".requires", ".upholds"]
                        .iter()
                        .any(|s| n.ends_with(s))
                    && std::fs::symlink_metadata(root.path(format!("{dir}/{n}/{name}"))).is_ok()
            })
        })
    }
}

/// [`SearchPath::find`] on a fresh listing.
#[cfg(test)]
pub fn find(root: &Sysroot, name: &str) -> Option<UnitFile> {
    SearchPath::read(root).find(root, name)
}

/// The drop-in directories systemd reads for a unit, most specific first:
/// `name.d`, then each dash prefix (`k3s-.service.d` for
/// `k3s-agent.service`), then the type-wide `service.d` (systemd.unit(5),
/// "Along with a unit file foo.service …").
fn dropin_dir_names(name: &str) -> Vec<String> {
    let mut out = vec![format!("{name}.d")];
    if let Some((stem, suffix)) = name.rsplit_once('.') {
        let mut prefix = stem;
        while let Some((head, _)) = prefix.rsplit_once('-') {
            out.push(format!("{head}-.{suffix}.d"));
            prefix = head;
        }
        out.push(format!("{suffix}.d"));
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Creates a host path under a test root: a file with `text`, or with
    /// `link` a symlink to `text`.
    pub(in crate::facts) fn put_as(root: &Path, host: &str, text: &str, link: bool) {
        let p = root.join(host.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        if link {
            symlink(text, p).unwrap();
        } else {
            std::fs::write(p, text).unwrap();
        }
    }

    pub(in crate::facts) fn put(root: &Path, host: &str, text: &str) {
        put_as(root, host, text, false);
    }

    fn link(root: &Path, host: &str, target: &str) {
        put_as(root, host, target, true);
    }

    #[test]
    fn absolute_links_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        put(
            d.path(),
            "/usr/local/lib/systemd/system/k3s.service",
            "[Service]\n",
        );
        link(
            d.path(),
            "/etc/systemd/system/k3s.service",
            "/usr/local/lib/systemd/system/k3s.service",
        );
        link(d.path(), "/lib", "usr/lib");
        assert_eq!(
            resolve(&root, "/etc/systemd/system/k3s.service").as_deref(),
            Some("/usr/local/lib/systemd/system/k3s.service")
        );
        assert_eq!(resolve(&root, "/lib/x"), None);
        link(d.path(), "/loop", "/loop");
        assert_eq!(resolve(&root, "/loop"), None);
        let u = find(&root, "k3s.service").unwrap();
        assert_eq!(u.fragment, "/usr/local/lib/systemd/system/k3s.service");
        assert!(!u.enabled);
    }

    #[test]
    fn masked_units_and_dropins_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        put(
            d.path(),
            "/usr/lib/systemd/system/k3s.service",
            "[Service]\n",
        );
        link(d.path(), "/etc/systemd/system/k3s.service", "/dev/null");
        assert_eq!(find(&root, "k3s.service"), None);
        std::fs::remove_file(d.path().join("etc/systemd/system/k3s.service")).unwrap();
        put(
            d.path(),
            "/usr/lib/systemd/system/k3s.service.d/10-a.conf",
            "a",
        );
        put(
            d.path(),
            "/run/systemd/system/k3s.service.d/10-a.conf",
            "run",
        );
        put(d.path(), "/etc/systemd/system/k3s.service.d/20-b.conf", "b");
        link(
            d.path(),
            "/etc/systemd/system/k3s.service.d/30-c.conf",
            "/dev/null",
        );
        put(d.path(), "/etc/systemd/system/service.d/05-all.conf", "all");
        put(
            d.path(),
            "/etc/systemd/system/k3s-.service.d/07-k.conf",
            "k",
        );
        put(d.path(), "/etc/systemd/system/k3s.service.d/notes.txt", "x");
        link(
            d.path(),
            "/etc/systemd/system/multi-user.target.wants/k3s.service",
            "/usr/lib/systemd/system/k3s.service",
        );
        let u = find(&root, "k3s.service").unwrap();
        assert_eq!(
            u.dropins,
            vec![
                "/etc/systemd/system/service.d/05-all.conf",
                "/run/systemd/system/k3s.service.d/10-a.conf",
                "/etc/systemd/system/k3s.service.d/20-b.conf",
            ]
        );
        assert!(u.enabled);
        let agent = dropin_dir_names("k3s-agent.service");
        assert_eq!(
            agent,
            vec!["k3s-agent.service.d", "k3s-.service.d", "service.d"]
        );
    }
}
