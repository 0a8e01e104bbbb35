//! The one atomic-write helper.
//!
//! Every file sightline puts on a host goes through [`write_atomic`]: a temp
//! file in the target directory, mode set before any data is written, fsync,
//! rename over the target, fsync of the directory. A crash at any point leaves
//! either the old file or the new one, never a torn one, and a secret never
//! exists on disk with a looser mode than intended.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of temp files. k3s's deploy controller and systemd both ignore
/// dotfiles, so a half-written temp file is never picked up.
pub const TEMP_PREFIX: &str = ".sightline-tmp.";

/// Suffix of temp files. Not every reader skips dotfiles: node_exporter's
/// textfile collector reads every name ending in `.prom`
/// (`collector/textfile.go`: `strings.HasSuffix(name, ".prom")`), so a temp
/// file named after its target would be scraped half-written.
pub const TEMP_SUFFIX: &str = ".tmp";

/// How much a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: the file survives a power loss
    /// whole, old or new.
    Durable,
    /// Rename only: readers never see a torn file, but a power loss may
    /// lose the write. For status and metrics, which are rewritten soon and
    /// whose loss is harmless.
    Volatile,
}

/// Writes `data` to `path` atomically with permission bits `mode`.
///
/// Parent directories are created (mode 0755) when missing.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, data, mode, Durability::Durable)
}

/// The directory of `path` (created when missing) and its file name.
fn prepare_dir(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = parent_of(path)?;
    create_dir_all(&dir, 0o755)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    Ok((dir, file_name))
}

/// A fresh temp name beside `file_name` in `dir`. The writer's pid in the
/// name tells a leftover of a killed run from a temp file another live
/// sightline task is writing right now.
fn temp_name(dir: &Path, file_name: &str) -> io::Result<PathBuf> {
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(dir.join(format!(
        "{TEMP_PREFIX}{}-{}.{file_name}{TEMP_SUFFIX}",
        std::process::id(),
        hex::encode(rnd)
    )))
}

fn write_with(path: &Path, data: &[u8], mode: u32, durability: Durability) -> io::Result<()> {
    let (dir, file_name) = prepare_dir(path)?;
    let (tmp_path, mut tmp) = create_temp(&dir, &file_name, mode)?;
    // Kill points only for durable writes: those are the ones a later run
    // relies on, and the volatile status and metrics files, rewritten on
    // every change, would multiply the sweep for nothing.
    let point = |name| {
        if durability == Durability::Durable {
            crate::failpoint::hit(name);
        }
    };
    let result = (|| {
        point("atomic.temp_created");
        // The open() mode is filtered by the umask; set it explicitly before
        // writing so the content is never readable with looser permissions.
        tmp.set_permissions(fs::Permissions::from_mode(mode))?;
        tmp.write_all(data)?;
        point("atomic.data_written");
        if durability == Durability::Durable {
            tmp.sync_all()?;
        }
        point("atomic.synced");
        drop(tmp);
        fs::rename(&tmp_path, path)?;
        if durability == Durability::Durable {
            fsync_dir(&dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Makes `path` a symlink to `target` atomically (a link under a temp name,
/// renamed over `path`), for restoring an original that was a symlink.
pub fn symlink_atomic(target: &Path, path: &Path) -> io::Result<()> {
    let (dir, file_name) = prepare_dir(path)?;
    let tmp = temp_name(&dir, &file_name)?;
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(&dir)
}

/// Writes `data` unless `path` already holds exactly it; returns whether it
/// wrote. A no-op must write nothing.
pub fn write_if_changed(
    path: &Path,
    data: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<bool> {
    if let Ok(m) = fs::symlink_metadata(path)
        && m.is_file()
        && m.permissions().mode() & 0o7777 == mode
        && m.len() == data.len() as u64
        && fs::read(path).is_ok_and(|cur| cur == data)
    {
        return Ok(false);
    }
    write_with(path, data, mode, durability)?;
    Ok(true)
}

/// Creates `dir` and its missing parents; only directories created here get
/// `mode` (existing ones are left alone).
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent, 0o755)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a file and fsyncs its directory; a missing file is not an error.
pub fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            fsync_dir(&parent_of(path)?)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes sightline's temp files in `dir` (and below it when `recursive`)
/// that no live writer owns: those of a process that is gone, and those of
/// an older naming that are more than ten minutes old. Returns what it removed.
pub fn remove_temp_files(dir: &Path, recursive: bool) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type()?;
        if ft.is_dir() && recursive {
            removed.extend(remove_temp_files(&entry.path(), true)?);
        } else if (ft.is_file() || ft.is_symlink())
            && name.starts_with(TEMP_PREFIX)
            && is_orphan(&name, &entry)?
        {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

fn is_orphan(name: &str, entry: &fs::DirEntry) -> io::Result<bool> {
    let tag = name[TEMP_PREFIX.len()..]
        .split('.')
        .next()
        .unwrap_or_default();
    if let Some((pid, rnd)) = tag.split_once('-')
        && rnd.len() == 12
        && let Ok(pid) = pid.parse::<i32>()
    {
        if pid as u32 == std::process::id() {
            return Ok(false);
        }
        // kill(pid, 0) fails with ESRCH only when no such process exists.
        return Ok(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH),
        );
    }
    let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
    Ok(age > std::time::Duration::from_secs(600))
}

/// fsyncs a directory so that a rename or unlink in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> io::Result<PathBuf> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.to_path_buf()),
        _ => Ok(PathBuf::from(".")),
    }
}

fn create_temp(dir: &Path, file_name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    for _ in 0..16 {
        let tmp_path = temp_name(dir, file_name)?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o700)
            .open(&tmp_path)
        {
            Ok(f) => return Ok((tmp_path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a unique temp file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_with_mode_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/secret.yaml");
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn failed_write_leaves_target_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("target");
        fs::write(&p, b"old").unwrap();
        // A directory in the way of the rename makes it fail.
        let bad = d.path().join("dir");
        fs::create_dir(&bad).unwrap();
        fs::write(bad.join("x"), b"x").unwrap();
        assert!(write_atomic(&bad, b"new", 0o644).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "temp file leaked: {names:?}");
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.prom");
        assert!(write_if_changed(&p, b"a 1\n", 0o644, Durability::Volatile).unwrap());
        let ino = fs::metadata(&p).unwrap().ino();
        assert!(!write_if_changed(&p, b"a 1\n", 0o644, Durability::Volatile).unwrap());
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino, "rewritten");
        assert!(write_if_changed(&p, b"a 1\n", 0o600, Durability::Volatile).unwrap());
        assert!(write_if_changed(&p, b"a 2\n", 0o600, Durability::Volatile).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"a 2\n");
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("backup/etc");
        fs::create_dir_all(&sub).unwrap();
        // pid 2^22 + 1 is above the kernel's pid_max limit: never alive.
        let dead = sub.join(format!("{TEMP_PREFIX}4194305-0123456789ab.policy.yaml"));
        let mine = d.path().join(format!(
            "{TEMP_PREFIX}{}-0123456789ab.state.json",
            std::process::id()
        ));
        let fresh_old_style = d
            .path()
            .join(format!("{TEMP_PREFIX}state.json.0123456789ab"));
        let other = d.path().join("state.json");
        for f in [&dead, &mine, &fresh_old_style, &other] {
            fs::write(f, b"x").unwrap();
        }
        assert!(remove_temp_files(d.path(), false).unwrap().is_empty());
        assert_eq!(
            remove_temp_files(d.path(), true).unwrap(),
            vec![dead.clone()]
        );
        assert!(!dead.exists() && mine.exists() && fresh_old_style.exists() && other.exists());
    }

    #[test]
    fn temp_names_never_end_like_the_target() {
        let d = tempfile::tempdir().unwrap();
        for target in ["sightline.prom", "audit-policy.yaml", "50-sightline.conf"] {
            let tmp = temp_name(d.path(), target).unwrap();
            let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(TEMP_PREFIX), "{name}");
            let ext = Path::new(target).extension().unwrap().to_string_lossy();
            assert!(
                !name.ends_with(&format!(".{ext}")),
                "{name} ends like {target}"
            );
            // A leftover of this writer is still told apart by its pid.
            fs::write(&tmp, b"x").unwrap();
            assert!(remove_temp_files(d.path(), false).unwrap().is_empty());
            fs::remove_file(&tmp).unwrap();
        }
    }

    #[test]
    fn new_dirs_get_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("var/log/k3s");
        create_dir_all(&p, 0o700).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755
        );
    }
}
