//! Boots a real systemd (Debian bookworm, systemd 252) in a throw-away
//! `systemd-nspawn` container, for tests that need systemd and D-Bus.
//!
//! ```ignore
//! let p = match Container::prepare("restart") {
//!     Ok(p) => p,
//!     Err(skip) => return skip.report(),
//! };
//! install_standin_k3s(&p);                  // optional: files before boot
//! let c = p.boot().unwrap_or_else(|s| panic!("{s}"));  // or report + return
//! assert!(c.exec(&["systemctl", "is-active", "k3s"]).status.success());
//! c.write_file("/etc/rancher/k3s/config.yaml", "...", 0o600);
//! let out = c.sh("systemctl restart k3s; journalctl -u k3s -n 5");
//! let bus = c.bus_address();                // unix:path=/proc/PID1/root/run/dbus/...
//! ```
//!
//! * The rootfs comes from `scripts/test-rootfs` (run once per test process;
//!   the first run on a machine debootstraps for about a minute, later runs
//!   reuse the cached tarball). Each container gets a fresh extracted copy
//!   in a temp dir, so tests can change anything.
//! * Commands run inside through `nsenter -t PID1 -a` with a clean
//!   environment (PATH, HOME, LANG only; never the host's `SIGHTLINE_*`);
//!   [`Container::command`] returns the `Command` to add env vars or stdin.
//! * Files: the [`Rootfs`] trait (import it) gives `write_file`,
//!   `install_file`, `read_file`, `remove_file` and `host_path` on both
//!   [`Prepared`] and [`Container`], resolving symlinks inside the root.
//! * Dropping the [`Container`] halts it (SIGTERM to nspawn, SIGKILL after
//!   15 s) and deletes the temp root; no process outlives it.
//! * [`Skip`] is returned only when containers cannot run on this machine
//!   (not root, or nspawn refused for a kernel/permission reason); callers
//!   print it with [`Skip::report`] and return. Everything else panics with
//!   what went wrong. Set `SIGHTLINE_NSPAWN_REQUIRED=1` to turn skips into
//!   failures (CI on a machine that must run them).
//!
//! Safety: systemd only ever boots inside the extracted rootfs, in the
//! container's own namespaces; nothing here touches the host's `/`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a boot may take before it is declared hung.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a halting container gets before it is killed.
const HALT_TIMEOUT: Duration = Duration::from_secs(15);
/// PATH for commands run in the container.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Containers cannot run on this machine; the reason says why.
#[derive(Debug, Clone)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nspawn tests cannot run here: {}", self.0)
    }
}

impl Skip {
    /// Prints a loud `SKIPPED:` line (or panics when
    /// `SIGHTLINE_NSPAWN_REQUIRED=1`). Call it and return from the test.
    pub fn report(&self) {
        if std::env::var("SIGHTLINE_NSPAWN_REQUIRED").as_deref() == Ok("1") {
            panic!("{self} (and SIGHTLINE_NSPAWN_REQUIRED=1)");
        }
        eprintln!("\n!!!!! SKIPPED: {self} !!!!!\n");
    }
}

/// Files inside a container's root. `path` arguments are absolute paths as
/// the container sees them; symlinks are resolved inside the root (so
/// `/var/run/x` lands in the container's `/run`, never the host's).
pub trait Rootfs {
    /// The directory on the host that is the container's `/`.
    fn root(&self) -> PathBuf;

    /// The running container, if booted (helpers use it to reload systemd).
    fn container(&self) -> Option<&Container> {
        None
    }

    /// Host path of the container path `path`.
    fn host_path(&self, path: &str) -> PathBuf {
        resolve_in_root(&self.root(), path)
    }

    /// Writes `content` to `path` with `mode`, creating parent dirs (0755).
    fn write_file(&self, path: &str, content: impl AsRef<[u8]>, mode: u32) {
        let dest = self.host_path(path);
        if let Some(parent) = dest.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .unwrap_or_else(|e| panic!("creating {} for {path}: {e}", parent.display()));
        }
        fs::write(&dest, content)
            .unwrap_or_else(|e| panic!("writing {path} ({}): {e}", dest.display()));
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {mode:o} {path}: {e}"));
    }

    /// Copies the host file `host_src` to `path` with `mode`.
    fn install_file(&self, host_src: impl AsRef<Path>, path: &str, mode: u32) {
        let src = host_src.as_ref();
        let content = fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        self.write_file(path, content, mode);
    }

    /// Reads `path`, or `None` when it does not exist.
    fn read_file(&self, path: &str) -> Option<String> {
        match fs::read_to_string(self.host_path(path)) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {path}: {e}"),
        }
    }

    /// Deletes the file `path` (no error when it is already gone).
    fn remove_file(&self, path: &str) {
        match fs::remove_file(self.host_path(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("removing {path}: {e}"),
            _ => {}
        }
    }
}

/// An extracted rootfs, not booted yet: write files into it, then
/// [`Prepared::boot`].
pub struct Prepared {
    dir: tempfile::TempDir,
    name: String,
}

/// A booted container. Dropping it halts it and deletes its root.
pub struct Container {
    nspawn: Child,
    pid1: u32,
    name: String,
    log: PathBuf,
    // Last: removed after the container has stopped.
    dir: tempfile::TempDir,
}

impl Container {
    /// Extracts a fresh rootfs; write files with [`Rootfs`] methods, then
    /// call [`Prepared::boot`]. `name_hint` goes into the machine name.
    pub fn prepare(name_hint: &str) -> Result<Prepared, Skip> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Skip(
                "systemd-nspawn needs root; run the tests as root (e.g. sudo -E cargo test)".into(),
            ));
        }
        let tarball = rootfs_tarball();
        let dir = tempfile::Builder::new()
            .prefix("sightline-nspawn-")
            .tempdir()
            .expect("creating a temp dir for the container root");
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(&root)
            .output()
            .expect("running tar");
        assert!(
            out.status.success(),
            "extracting {} failed: {}\n(delete it to have scripts/test-rootfs rebuild it)",
            tarball.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Prepared {
            dir,
            name: machine_name(name_hint),
        })
    }

    /// `prepare(name_hint)?.boot()`.
    pub fn boot(name_hint: &str) -> Result<Container, Skip> {
        Container::prepare(name_hint)?.boot()
    }

    /// The container's init as a host PID (`/proc/PID1/...`).
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// The machine name (`-M`), unique per container.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The extracted root on the host. Prefer [`Rootfs::root`], which also
    /// sees the container's own mounts (`/run`, `/tmp`).
    pub fn host_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// D-Bus address of the container's system bus, usable from the host.
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.pid1
        )
    }

    /// A command that runs `argv` inside the container (all namespaces,
    /// clean environment); add `.env(..)`, stdin etc. before running it.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid1.to_string())
            .args(["-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        c
    }

    /// Runs `argv` inside the container and returns its output.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.command(argv)
            .output()
            .unwrap_or_else(|e| panic!("running nsenter for {argv:?}: {e}"))
    }

    /// Runs `sh -c script` inside the container.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// Runs `sh -ec script`, panics (with its output) unless it succeeds,
    /// and returns its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-ec", script]);
        assert!(
            out.status.success(),
            "in container {}: `{script}` failed ({}):\n{}",
            self.name,
            out.status,
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The tail of the nspawn console output (for failure messages).
    pub fn console_tail(&self) -> String {
        tail(&self.log, 40)
    }

    fn halt(&mut self) {
        if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
            return;
        }
        let nspawn = Pid::from_raw(self.nspawn.id() as i32);
        // nspawn turns SIGTERM into an orderly halt of the container.
        let _ = kill(nspawn, Signal::SIGTERM);
        let deadline = Instant::now() + HALT_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "container {} did not halt within {} s; killing it",
            self.name,
            HALT_TIMEOUT.as_secs()
        );
        // Killing a PID namespace's init kills everything in it; nspawn alone
        // would leave the container running, re-parented.
        if is_child_of(self.pid1, self.nspawn.id()) {
            let _ = kill(Pid::from_raw(self.pid1 as i32), Signal::SIGKILL);
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

impl Rootfs for Container {
    /// `/proc/PID1/root`: the container's `/` as its processes see it,
    /// including the tmpfs on `/run` and `/tmp`.
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid1))
    }

    fn container(&self) -> Option<&Container> {
        Some(self)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.halt();
        // nspawn may leave its (empty) propagation dir behind on hosts whose
        // /run is not a tmpfs.
        let _ = fs::remove_dir_all(format!("/run/systemd/nspawn/propagate/{}", self.name));
    }
}

impl Rootfs for Prepared {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Prepared {
    /// Boots the rootfs and waits until systemd reports `running` or
    /// `degraded` and the system bus is up.
    ///
    /// Panics, with the console tail and what to check, when the boot fails
    /// or hangs for 120 s; returns [`Skip`] only when nspawn refuses to start
    /// for a kernel or permission reason.
    pub fn boot(self) -> Result<Container, Skip> {
        let log = self.dir.path().join("nspawn.log");
        let logf = fs::File::create(&log).expect("creating the nspawn log");
        let root = self.root();
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&root)
            .args([
                "-b",
                "--console=passive",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "-M",
                &self.name,
            ])
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting systemd-nspawn: {e} (install systemd-container: apt-get install -y systemd-container)")
            });
        let mut c = Container {
            pid1: 0,
            nspawn,
            name: self.name,
            log,
            dir: self.dir,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;

        // 1. The container's init: the `systemd` child of nspawn.
        loop {
            if let Ok(Some(status)) = c.nspawn.try_wait() {
                let console = c.console_tail();
                if let Some(reason) = refusal(&console) {
                    return Err(Skip(format!(
                        "systemd-nspawn refused to start ({reason}; exit {status}):\n{console}"
                    )));
                }
                panic!(
                    "systemd-nspawn exited ({status}) before the container's systemd started.\nnspawn output:\n{console}"
                );
            }
            if let Some(pid) = systemd_child(c.nspawn.id()) {
                c.pid1 = pid;
                break;
            }
            c.check_deadline(deadline, "the container's systemd to start");
            std::thread::sleep(Duration::from_millis(20));
        }

        // 2. Boot finished and the bus is up.
        let socket = PathBuf::from(format!("/proc/{}/root/run/dbus/system_bus_socket", c.pid1));
        let mut last = String::new();
        loop {
            if let Ok(Some(status)) = c.nspawn.try_wait() {
                panic!(
                    "the container {} stopped during boot ({status}); last state {last:?}.\nnspawn output:\n{}",
                    c.name,
                    c.console_tail()
                );
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut cmd = c.command(&["systemctl", "is-system-running", "--wait"]);
            let out = run_with_timeout(&mut cmd, remaining.max(Duration::from_secs(1)));
            last = match out {
                Some(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
                .trim()
                .to_string(),
                None => "systemctl is-system-running --wait timed out".into(),
            };
            match last.lines().last().unwrap_or("") {
                "running" | "degraded" if socket.exists() => return Ok(c),
                // ("offline" only means systemd's private socket is not up yet.)
                "maintenance" | "stopping" => {
                    let units = c.sh("systemctl --failed --no-pager; journalctl -b -p warning --no-pager | tail -30");
                    panic!(
                        "the container {} reached state {last:?} instead of running.\n{}\nnspawn output:\n{}",
                        c.name,
                        show(&units),
                        c.console_tail()
                    );
                }
                _ => {}
            }
            c.check_deadline(
                deadline,
                &format!("boot to finish (systemctl is-system-running: {last:?})"),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Container {
    fn check_deadline(&self, deadline: Instant, what: &str) {
        if Instant::now() < deadline {
            return;
        }
        let journal = if self.pid1 != 0 {
            show(&self.sh("systemctl list-jobs --no-pager; journalctl -b --no-pager | tail -30"))
        } else {
            String::new()
        };
        panic!(
            "timed out after {} s waiting for {what} in container {}.\n{journal}\nnspawn output:\n{}",
            BOOT_TIMEOUT.as_secs(),
            self.name,
            self.console_tail()
        );
    }
}

/// Polls `cond` every 100 ms until it is true; panics after `timeout`
/// saying what it was waiting for.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {:?} waiting for {what}",
            timeout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Formats a command's exit status and output for failure messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Paths of the k3s stand-in's PKI inside the container.
pub const K3S_TLS: &str = "/var/lib/rancher/k3s/server/tls";

/// The PEMs [`install_standin_k3s`] wrote, for clients on the host side.
pub struct StandinPki {
    pub server_ca: String,
    pub client_ca: String,
    pub admin_cert: String,
    pub admin_key: String,
}

/// Installs the k3s stand-in (`tests/standin`) into a rootfs: the program
/// as /usr/local/bin/k3s-standin, /etc/systemd/system/k3s.service enabled
/// for multi-user.target, and a fresh PKI under [`K3S_TLS`]:
/// server-ca.crt, serving-kube-apiserver.crt/.key (127.0.0.1, localhost),
/// client-ca.crt and client-admin.crt/.key (system:admin, system:masters).
/// /etc/rancher/k3s is left empty, so k3s starts healthy.
///
/// On a [`Prepared`] root k3s starts at boot; on a running [`Container`]
/// this also runs `systemctl daemon-reload` and starts it.
pub fn install_standin_k3s(rootfs: &impl Rootfs) -> StandinPki {
    let standin = super::repo().join("tests/standin");
    rootfs.install_file(
        standin.join("k3s-standin.py"),
        "/usr/local/bin/k3s-standin",
        0o755,
    );
    rootfs.install_file(
        standin.join("k3s.service"),
        "/etc/systemd/system/k3s.service",
        0o644,
    );
    let wants = rootfs.host_path("/etc/systemd/system/multi-user.target.wants");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&wants)
        .unwrap();
    let link = wants.join("k3s.service");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/k3s.service", &link).unwrap();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(rootfs.host_path("/etc/rancher/k3s"))
        .unwrap();

    let pki = super::pki::generate();
    let f = |name: &str| format!("{K3S_TLS}/{name}");
    rootfs.write_file(&f("server-ca.crt"), &pki.server_ca, 0o644);
    rootfs.write_file(&f("serving-kube-apiserver.crt"), &pki.serving_cert, 0o644);
    rootfs.write_file(&f("serving-kube-apiserver.key"), &pki.serving_key, 0o600);
    rootfs.write_file(&f("client-ca.crt"), &pki.client_ca, 0o644);
    rootfs.write_file(&f("client-admin.crt"), &pki.admin_cert, 0o644);
    rootfs.write_file(&f("client-admin.key"), &pki.admin_key, 0o600);

    if let Some(c) = rootfs.container() {
        c.sh_ok("systemctl daemon-reload && systemctl start k3s");
    }
    StandinPki {
        server_ca: pki.server_ca,
        client_ca: pki.client_ca,
        admin_cert: pki.admin_cert,
        admin_key: pki.admin_key,
    }
}

/// Runs scripts/test-rootfs once per process; returns the tarball.
fn rootfs_tarball() -> &'static Path {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL.get_or_init(|| {
        let script = super::repo().join("scripts/test-rootfs");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}); run it by hand to see why (it needs root and access to deb.debian.org).\n{}",
            script.display(),
            out.status,
            tail_str(&String::from_utf8_lossy(&out.stderr), 30)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            path.is_file(),
            "{} printed {path:?}, which is not a file",
            script.display()
        );
        path
    })
}

/// A machine name unique across processes and runs: `sl-HINT-PID-N-TIME`,
/// at most 64 characters of `[a-z0-9-]`.
fn machine_name(hint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "sl-{hint}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// The `systemd` process whose parent is `nspawn`, if it has exec'd yet.
fn systemd_child(nspawn: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok();
    let candidates: Vec<u32> = match children {
        Some(s) => s
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        None => fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&p| is_child_of(p, nspawn))
            .collect(),
    };
    candidates.into_iter().find(|&p| {
        fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "systemd")
            && fs::read_link(format!("/proc/{p}/ns/pid")).ok()
                != fs::read_link("/proc/self/ns/pid").ok()
    })
}

/// True when `pid`'s parent is `parent`.
fn is_child_of(pid: u32, parent: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // pid (comm) state ppid ...; comm may contain spaces and parentheses.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            == Some(parent)
    })
}

/// Why nspawn's output says it cannot run here, if it does.
fn refusal(console: &str) -> Option<&'static str> {
    [
        ("Operation not permitted", "operation not permitted"),
        ("Permission denied", "permission denied"),
        ("Function not implemented", "kernel lacks a feature"),
        ("not supported", "not supported by the kernel"),
        ("Failed to create cgroup", "cgroup setup failed"),
        ("cgroup hierarchy", "cgroup setup failed"),
        ("namespace", "namespaces unavailable"),
    ]
    .into_iter()
    .find(|(pat, _)| console.contains(pat))
    .map(|(_, why)| why)
}

/// Runs `cmd`, killing it after `timeout` (then `None`).
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nsenter");
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("waiting for nsenter") {
            Some(_) => return Some(child.wait_with_output().expect("reading nsenter output")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Resolves the absolute container path `path` under `root`, following
/// symlinks as the container would (absolute targets are re-rooted).
fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    assert!(
        path.starts_with('/'),
        "container paths are absolute: {path:?}"
    );
    let mut pending: VecDeque<PathBuf> = Path::new(path)
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut out = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.components().next() {
            None | Some(Component::RootDir | Component::CurDir | Component::Prefix(_)) => {}
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::Normal(n)) => {
                let cand = out.join(n);
                match fs::read_link(root.join(&cand)) {
                    Ok(target) => {
                        hops += 1;
                        assert!(
                            hops < 40,
                            "too many symlinks resolving {path} in {}",
                            root.display()
                        );
                        if target.is_absolute() {
                            out = PathBuf::new();
                        }
                        for t in target.components().rev() {
                            pending.push_front(PathBuf::from(t.as_os_str()));
                        }
                    }
                    Err(_) => out = cand,
                }
            }
        }
    }
    root.join(out)
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    tail_str(&s, n)
}

fn tail_str(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
