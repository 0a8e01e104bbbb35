//! The single lock shared by the CLI and the daemon, so two converges never
//! interleave.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
}

impl Lock {
    /// Takes the lock at `path`, waiting up to `wait` for another holder to
    /// finish. The holder's PID is written into the file so the error can
    /// name it.
    pub fn acquire(path: &Path, wait: Duration) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            crate::atomic::create_dir_all(dir, 0o755)
                .with_context(|| format!("creating lock directory {}", dir.display()))?;
        }
        let deadline = Instant::now() + wait;
        let mut file = open(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut flock) => {
                    flock.set_len(0)?;
                    flock.rewind()?;
                    let _ = writeln!(&mut *flock, "{}", std::process::id());
                    return Ok(Lock { _flock: flock });
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        let mut holder = String::new();
                        let mut f = f;
                        let _ = f.read_to_string(&mut holder);
                        bail!(
                            "another sightline process (pid {}) holds {}; wait for it to finish or stop it",
                            holder.trim().if_empty("unknown"),
                            path.display()
                        );
                    }
                    file = f;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
}

trait IfEmpty {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str;
}

impl IfEmpty for str {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str {
        if self.is_empty() { other } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out_with_pid() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/sightline/lock");
        let held = Lock::acquire(&p, Duration::ZERO).unwrap();
        let err = Lock::acquire(&p, Duration::from_millis(120)).unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(held);
        Lock::acquire(&p, Duration::ZERO).unwrap();
    }
}
