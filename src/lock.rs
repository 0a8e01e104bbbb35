//! The single lock shared by the CLI and the daemon, so two converges never
//! interleave.
//!
//! Two layers: inside one process an async mutex serialises the converge and
//! the cluster pass (they run as tasks on one thread, so a blocking wait
//! there would stop the very task that holds the lock); across processes a
//! `flock` on a file in the run directory. The file lock is only ever tried
//! without blocking, with async sleeps between tries.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{Mutex, MutexGuard};

/// Serialises lock holders inside this process.
static IN_PROCESS: Mutex<()> = Mutex::const_new(());

/// How often a waiter tries the file lock again.
const RETRY: Duration = Duration::from_millis(50);

/// A held lock; released when dropped.
///
/// The file holds the holder's PID while held and is emptied on release,
/// so the next holder can tell a clean release from a holder that was
/// killed: only then can a writer's temp files have been left behind, and
/// only then is the sweep for them worth its directory scans.
#[derive(Debug)]
pub struct Lock {
    flock: Flock<File>,
    previous_holder_died: bool,
    _in_process: MutexGuard<'static, ()>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Still under the flock: nobody reads a half-emptied file.
        let _ = self.flock.set_len(0);
    }
}

impl Lock {
    /// Takes the lock at `path`: first this process's turn, then the file
    /// lock, waiting up to `wait` for another process to release it. The
    /// holder's PID is written into the file so the error can name it.
    pub async fn acquire(path: &Path, wait: Duration) -> Result<Lock> {
        let turn = IN_PROCESS.lock().await;
        if let Some(dir) = path.parent() {
            crate::atomic::create_dir_all(dir, 0o755)
                .with_context(|| format!("creating lock directory {}", dir.display()))?;
        }
        let deadline = Instant::now() + wait;
        let (mut file, created) = open(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut flock) => {
                    let mut last_holder = String::new();
                    let _ = flock.read_to_string(&mut last_holder);
                    flock.set_len(0)?;
                    flock.rewind()?;
                    let _ = writeln!(&mut *flock, "{}", std::process::id());
                    return Ok(Lock {
                        flock,
                        // A new file: the first run since boot (the run
                        // directory is tmpfs), and a reboot ends any writer.
                        previous_holder_died: created || !last_holder.trim().is_empty(),
                        _in_process: turn,
                    });
                }
                Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        let mut holder = String::new();
                        let _ = f.read_to_string(&mut holder);
                        let holder = holder.trim();
                        bail!(
                            "another sightline process (pid {}) holds {}; wait for it to finish or stop it",
                            if holder.is_empty() { "unknown" } else { holder },
                            path.display()
                        );
                    }
                    file = f;
                    tokio::time::sleep(RETRY).await;
                }
                Err((_, e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
    }
}

impl Lock {
    /// True when the previous holder did not release the lock (it was
    /// killed, or the machine went down), or when there was none since boot.
    pub fn previous_holder_died(&self) -> bool {
        self.previous_holder_died
    }
}

/// Opens the lock file; true when this call created it.
fn open(path: &Path) -> Result<(File, bool)> {
    let open = |create_new: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true).mode(0o600);
        if create_new {
            o.create_new(true);
        }
        o.open(path)
    };
    match open(true) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open(false).map(|f| (f, false)),
        Err(e) => Err(e),
    }
    .with_context(|| format!("opening lock file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::os::unix::process::CommandExt;
    use std::rc::Rc;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn other_process_holder_times_out_with_pid() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/sightline/lock");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Another process's lock: an flock on a separate open file, taken
        // from a child so that the in-process mutex is not involved.
        let mut child = std::process::Command::new("flock")
            .arg(&p)
            .args(["sleep", "5"])
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&p, format!("{}\n", child.id())).unwrap();
        let err = rt()
            .block_on(Lock::acquire(&p, Duration::from_millis(200)))
            .unwrap_err();
        assert!(err.to_string().contains(&child.id().to_string()), "{err}");
        // flock and the sleep that inherited its descriptor.
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        // The sleep is not our child: it closes the descriptor when the
        // kernel has finished killing it, a moment after killpg returns.
        rt().block_on(Lock::acquire(&p, Duration::from_secs(5)))
            .unwrap();
    }

    #[test]
    fn a_holder_that_died_is_told_from_a_clean_release() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let rt = rt();
        // No file yet: nothing is known of earlier holders, so sweep.
        let first = rt.block_on(Lock::acquire(&p, Duration::ZERO)).unwrap();
        assert!(first.previous_holder_died());
        assert!(!std::fs::read_to_string(&p).unwrap().trim().is_empty());
        drop(first);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "",
            "not emptied on release"
        );
        let clean = rt.block_on(Lock::acquire(&p, Duration::ZERO)).unwrap();
        assert!(!clean.previous_holder_died());
        drop(clean);
    }

    #[test]
    fn a_killed_holder_makes_the_next_one_sweep() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::hold_and_die",
                "--ignored",
                "--nocapture",
            ])
            .env("SIGHTLINE_LOCK_TEST_PATH", &p)
            .status()
            .unwrap();
        // The child took the lock and was SIGKILLed holding it.
        assert!(!child.success());
        assert!(!std::fs::read_to_string(&p).unwrap().trim().is_empty());
        let next = rt().block_on(Lock::acquire(&p, Duration::ZERO)).unwrap();
        assert!(next.previous_holder_died());
    }

    /// Run by `a_killed_holder_makes_the_next_one_sweep` in a child process.
    #[test]
    #[ignore = "run as a child by a_killed_holder_makes_the_next_one_sweep"]
    fn hold_and_die() {
        let Some(p) = std::env::var_os("SIGHTLINE_LOCK_TEST_PATH") else {
            return;
        };
        let _held = rt()
            .block_on(Lock::acquire(Path::new(&p), Duration::ZERO))
            .unwrap();
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }

    /// The daemon runs the converge and the cluster pass as tasks on one
    /// thread. A second taker must wait without stopping that thread: the
    /// holder (here: a converge waiting for k3s) keeps running, and so do
    /// the watchdog pings.
    #[test]
    fn waiting_never_blocks_the_runtime_thread() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let ticks = Rc::new(Cell::new(0u32));
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt(), async {
            let t = ticks.clone();
            let pinger = tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    t.set(t.get() + 1);
                }
            });
            let held = Lock::acquire(&p, Duration::ZERO).await.unwrap();
            let p2 = p.clone();
            let waiter = tokio::task::spawn_local(async move {
                let start = Instant::now();
                let _l = Lock::acquire(&p2, Duration::from_secs(5)).await.unwrap();
                start.elapsed()
            });
            let before = ticks.get();
            // The holder keeps awaiting (as a restart waits for /readyz).
            tokio::time::sleep(Duration::from_millis(400)).await;
            let during = ticks.get() - before;
            drop(held);
            let waited = waiter.await.unwrap();
            pinger.abort();
            assert!(
                during >= 10,
                "the runtime stalled: {during} ticks in 400 ms"
            );
            assert!(waited >= Duration::from_millis(350), "{waited:?}");
        });
    }
}
