//! Packaging: the .deb (lintian; install, upgrade, remove and purge under a
//! real systemd 252), the Flatcar system extension (merged as a directory and
//! as a raw image, recognised by systemd-dissect), the Ignition config (the
//! committed one is the generated one, and ignition-validate accepts it) and
//! the cloud-init user-data (cloud-init 22.4 and 25.x accept it).
//!
//! The .deb and the extension are built once per test process from this
//! test build's binary (SIGHTLINE_BIN), into CARGO_TARGET_TMPDIR/packaging.
//! External tools missing: the test fails, unless
//! SIGHTLINE_ALLOW_MISSING_TOOLS=1 (then it says so and skips that check).
//! Containers: needs root; prints `SKIPPED: ...` when nspawn cannot run here
//! (SIGHTLINE_NSPAWN_REQUIRED=1 makes that a failure).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::nspawn::{Container, Rootfs, install_standin_k3s, show, wait_until};
use common::{available, repo, tool};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const TEST_CONFIG: &str = "[k3s]\nready_timeout_seconds = 30\n";

/// Debian's name for this machine's architecture.
fn deb_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// systemd's name for this machine's architecture.
fn sd_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86-64"
    }
}

/// True when every tool is installed (see [`tool`]).
fn tools(names: &[&str]) -> bool {
    names.iter().all(|n| tool(n))
}

/// Scratch space for this process's builds, emptied once per process.
fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Runs `scripts/SCRIPT ARGS` on this test build's binary and returns the
/// path it printed.
fn build(script: &str, args: &[&str]) -> PathBuf {
    let t = Instant::now();
    let out = Command::new(repo().join("scripts").join(script))
        .args(args)
        .env("SIGHTLINE_BIN", env!("CARGO_BIN_EXE_sightline"))
        .env_remove("SIGHTLINE_HOST_BIN")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} {args:?} failed:\n{}",
        show(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
    assert!(
        path.exists(),
        "scripts/{script} printed {path:?}, which does not exist:\n{}",
        show(&out)
    );
    eprintln!(
        "scripts/{script}: {} in {:.1?}",
        path.display(),
        t.elapsed()
    );
    path
}

/// The .deb, built once.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = work_dir().join("deb");
        build("build-deb", &["--out", out.to_str().unwrap()])
    })
}

/// The raw system extension image, built once.
fn sysext_raw() -> &'static Path {
    static RAW: OnceLock<PathBuf> = OnceLock::new();
    RAW.get_or_init(|| {
        let out = work_dir().join("sysext");
        build("build-sysext", &["--out", out.to_str().unwrap()])
    })
}

/// The system extension as a directory tree, built once.
fn sysext_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let out = work_dir().join("sysext-tree");
        build("build-sysext", &["--dir", out.to_str().unwrap()])
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn prop(c: &Container, unit: &str, p: &str) -> String {
    let out = c.exec(&["systemctl", "show", unit, "-p", p, "--value"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where sightline.service was loaded from, symlinks resolved (Debian's
/// systemd reports /lib/..., which usrmerge links to /usr/lib/...).
fn unit_file(c: &Container) -> String {
    let path = prop(c, "sightline", "FragmentPath");
    c.sh_ok(&format!("readlink -f {path}")).trim().to_string()
}

fn exists(c: &Container, path: &str) -> bool {
    c.exec(&["test", "-e", path]).status.success() || c.exec(&["test", "-L", path]).status.success()
}

/// Per-mount options of the mount at `mountpoint` as process `pid` sees it
/// (the last, i.e. topmost, entry in its mountinfo).
fn mount_options(c: &Container, pid: &str, mountpoint: &str) -> String {
    let info = c.sh_ok(&format!("cat /proc/{pid}/mountinfo"));
    info.lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 5 && f[4] == mountpoint).then(|| f[5].to_string())
        })
        .unwrap_or_else(|| panic!("{mountpoint} is not a mount point for PID {pid}:\n{info}"))
}

/// Validates a sightline configuration with the real loader (`sightline
/// config` on a scratch root).
fn assert_sightline_accepts_config(what: &str, toml: &str) {
    let root = tempfile::tempdir().unwrap();
    common::write(root.path(), "/etc/sightline/config.toml", toml);
    let out = common::sightline(root.path(), &["config"]);
    assert!(
        out.status.success(),
        "sightline rejects the configuration in {what}:\n{toml}\n{}",
        show(&out)
    );
}

/// Makes the block devices of loop setup available in the container (which
/// nspawn starts without them) and checks one image can be attached.
fn loop_devices_in(c: &Container, image: &str) -> Result<(), String> {
    if !Path::new("/dev/loop-control").exists() {
        return Err("the host has no /dev/loop-control".into());
    }
    let script = format!(
        "[ -e /dev/loop-control ] || mknod -m 0600 /dev/loop-control c 10 237\n\
         for i in $(seq 0 31); do [ -e /dev/loop$i ] || mknod -m 0600 /dev/loop$i b 7 $i; done\n\
         dev=$(losetup --find --show --read-only {image})\n\
         losetup -d \"$dev\""
    );
    let out = c.exec(&["sh", "-ec", &script]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot attach a loop device in the container:\n{}",
            show(&out)
        ))
    }
}

/// Checks this host can attach `image` to a loop device.
fn host_loop_devices(image: &Path) -> Result<(), String> {
    let out = run(Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(image));
    if !out.status.success() {
        return Err(format!(
            "losetup cannot attach an image here:\n{}",
            show(&out)
        ));
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    run_ok(Command::new("losetup").args(["-d", &dev]));
    Ok(())
}

fn loud_skip(what: &str, why: &str) {
    eprintln!("\n!!!!! SKIPPED: {what}: {why} !!!!!\n");
}

/// The committed Ignition config.
fn ignition() -> serde_json::Value {
    let text = fs::read_to_string(repo().join("packaging/flatcar/sightline.ign")).unwrap();
    serde_json::from_str(&text).expect("packaging/flatcar/sightline.ign is JSON")
}

fn ign_link<'a>(ign: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    ign["storage"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("the Ignition config has no link {path}"))
}

fn ign_file<'a>(ign: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    ign["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("the Ignition config has no file {path}"))
}

/// Decodes a `data:,` URL (percent-encoded, no base64).
fn data_url(url: &str) -> String {
    let data = url
        .strip_prefix("data:,")
        .unwrap_or_else(|| panic!("not a plain data URL: {url}"));
    let b = data.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&data[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_deb_holds_every_file_with_a_stripped_binary_and_a_conffile() {
    if !tools(&["dpkg-deb", "strip", "readelf"]) {
        return;
    }
    let deb = deb();
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("sightline_{VERSION}-1_{}.deb", deb_arch())
    );
    let field = |f: &str| {
        run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(f))
            .trim()
            .to_string()
    };
    assert_eq!(field("Version"), format!("{VERSION}-1"));
    assert_eq!(field("Architecture"), deb_arch());
    assert!(
        field("Depends").contains("libc6 (>="),
        "{}",
        field("Depends")
    );
    assert_eq!(
        run_ok(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles")).trim(),
        "/etc/sightline/config.toml"
    );

    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut expected: Vec<String> = [
        "/usr/bin/sightline",
        "/usr/lib/systemd/system/sightline.service",
        "/usr/lib/systemd/system/sightline-throttle.service",
        "/usr/lib/systemd/system/sightline-throttle.timer",
        "/usr/lib/tmpfiles.d/sightline.conf",
        "/usr/share/sightline/bundle.tar",
        "/usr/share/sightline/bundle.tar.sha256",
        "/usr/lib/sightline/config.d/10-package.toml",
        "/etc/sightline/config.toml",
        "/usr/share/bash-completion/completions/sightline",
        "/usr/share/zsh/vendor-completions/_sightline",
        "/usr/share/fish/vendor_completions.d/sightline.fish",
        "/usr/share/doc/sightline/copyright",
        "/usr/share/doc/sightline/changelog.Debian.gz",
        "/usr/share/lintian/overrides/sightline",
        "/usr/share/man/man1/sightline.1.gz",
        "/usr/share/man/man5/sightline.toml.5.gz",
        "/usr/share/doc/sightline/config.toml",
    ]
    .map(String::from)
    .to_vec();
    // A gzipped page for every page `sightline manpage` writes.
    let pages = tempfile::tempdir().unwrap();
    common::ok(
        Path::new("/"),
        &["manpage", "--out", pages.path().to_str().unwrap()],
    );
    for e in fs::read_dir(pages.path()).unwrap() {
        let name = e.unwrap().file_name().to_str().unwrap().to_string();
        let section = name.rsplit('.').next().unwrap().to_string();
        expected.push(format!("/usr/share/man/man{section}/{name}.gz"));
    }
    for path in &expected {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" .{path}"))),
            "{path} is missing from the .deb:\n{listing}"
        );
    }
    assert!(
        !listing.contains("/usr/lib/systemd/system/multi-user.target.wants"),
        "enabling is the postinst's job"
    );
    // The configuration may hold secrets (webhook URLs, tokens): only root
    // reads it.
    let conf = listing
        .lines()
        .find(|l| l.ends_with(" ./etc/sightline/config.toml"))
        .unwrap();
    assert!(
        conf.starts_with("-rw------- root/root "),
        "/etc/sightline/config.toml is shipped 0600 root:root:\n{conf}"
    );

    let x = tempfile::tempdir().unwrap();
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(x.path()));
    let sections = run_ok(
        Command::new("readelf")
            .arg("-S")
            .arg(x.path().join("usr/bin/sightline")),
    );
    assert!(
        !sections.contains(".symtab") && !sections.contains(".debug_info"),
        "the binary is stripped:\n{sections}"
    );
    assert_eq!(
        fs::read(x.path().join("etc/sightline/config.toml")).unwrap(),
        fs::read(repo().join("files/config.toml")).unwrap(),
        "the conffile is files/config.toml"
    );
    assert_eq!(
        fs::read(x.path().join("usr/share/doc/sightline/config.toml")).unwrap(),
        fs::read(repo().join("files/config.toml")).unwrap(),
        "the pristine defaults config errors point to"
    );
    // sightline.toml(5) is the one sightline renders from files/config.toml.
    let page = run_ok(
        Command::new("gzip")
            .arg("-dc")
            .arg(x.path().join("usr/share/man/man5/sightline.toml.5.gz")),
    );
    assert_eq!(
        page,
        fs::read_to_string(pages.path().join("sightline.toml.5")).unwrap()
    );
    assert!(page.contains("api_wait_seconds"), "{page}");
    let dropin =
        fs::read_to_string(x.path().join("usr/lib/sightline/config.d/10-package.toml")).unwrap();
    assert_eq!(
        dropin,
        fs::read_to_string(repo().join("packaging/common/10-package.toml")).unwrap()
    );
    // It must not override what an admin sets in /etc/sightline/config.toml.
    assert!(
        toml::from_str::<toml::Table>(&dropin).unwrap().is_empty(),
        "the packaged drop-in sets nothing:\n{dropin}"
    );
    // The shipped bundle is the binary's own.
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_sightline"))
            .args(["bundle", "verify"])
            .arg(x.path().join("usr/share/sightline/bundle.tar")),
    );
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("bundle.tar.sha256")
            .current_dir(x.path().join("usr/share/sightline")),
    );
}

#[test]
fn lintian_accepts_the_deb() {
    if !tools(&["dpkg-deb", "strip", "readelf", "lintian"]) {
        return;
    }
    let deb = deb();
    let t = Instant::now();
    let out = run(Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(deb));
    eprintln!("lintian took {:.1?}", t.elapsed());
    assert!(
        out.status.success(),
        "lintian --fail-on error,warning {}:\n{}",
        deb.display(),
        show(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "{text}"
    );
}

#[test]
fn the_deb_installs_starts_hardened_restarts_on_upgrade_and_purges_only_its_own_files() {
    if !tools(&["dpkg-deb", "strip", "readelf"]) {
        return;
    }
    let deb = deb();
    let p = match Container::prepare("deb") {
        Ok(p) => p,
        Err(skip) => return skip.report(),
    };
    install_standin_k3s(&p);
    p.install_file(deb, "/root/sightline.deb", 0o644);
    p.write_file("/etc/sightline/config.d/50-test.toml", TEST_CONFIG, 0o644);
    // What purge must leave alone: k3s's files, and other files in the
    // directories sightline shares.
    p.write_file("/etc/rancher/marker", "k3s owns this\n", 0o644);
    p.write_file("/var/lib/rancher/marker", "k3s owns this\n", 0o644);
    p.write_file(
        "/etc/systemd/system.conf.d/50-other.conf",
        "[Manager]\n",
        0o644,
    );
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    // /run is a tmpfs of the booted container, so this one is written
    // inside it.
    let out = c.exec(&[
        "sh",
        "-c",
        "mkdir -p /run/node_exporter/textfile_collector && echo 'other 1' > /run/node_exporter/textfile_collector/other.prom",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    wait_until("k3s active", Duration::from_secs(30), || {
        prop(&c, "k3s", "ActiveState") == "active"
    });

    // Install: tmpfiles, enable, start (Type=notify: dpkg returns after READY=1).
    let t = Instant::now();
    let out = c.exec(&["dpkg", "-i", "/root/sightline.deb"]);
    assert!(out.status.success(), "dpkg -i:\n{}", show(&out));
    eprintln!("dpkg -i took {:.1?}", t.elapsed());
    let journal = || c.sh_ok("journalctl -u sightline --no-pager -o cat | tail -40");
    assert_eq!(
        prop(&c, "sightline", "ActiveState"),
        "active",
        "{}",
        journal()
    );
    assert_eq!(prop(&c, "sightline", "SubState"), "running");
    assert_eq!(prop(&c, "sightline", "Type"), "notify");
    assert_eq!(prop(&c, "sightline", "ExecMainStatus"), "0");
    assert_eq!(prop(&c, "sightline", "UnitFileState"), "enabled");
    assert_eq!(unit_file(&c), "/usr/lib/systemd/system/sightline.service");
    assert!(exists(
        &c,
        "/etc/systemd/system/multi-user.target.wants/sightline.service"
    ));
    assert!(!journal().contains("226/NAMESPACE"), "{}", journal());
    // The sandbox is in force: / is read-only for the daemon, what it
    // writes is not.
    assert_eq!(prop(&c, "sightline", "ProtectSystem"), "strict");
    let pid = prop(&c, "sightline", "MainPID");
    assert!(
        mount_options(&c, &pid, "/").starts_with("ro"),
        "ProtectSystem=strict makes / read-only"
    );
    assert!(mount_options(&c, &pid, "/etc/rancher/k3s").starts_with("rw"));
    assert!(mount_options(&c, &pid, "/etc/systemd/system.conf.d").starts_with("rw"));
    // The package's drop-in and files are in place and in use.
    let config = c.sh_ok("sightline config");
    assert!(
        config.contains("/usr/lib/sightline/config.d/10-package.toml"),
        "{config}"
    );
    c.sh_ok("cd /usr/share/sightline && sha256sum -c bundle.tar.sha256 && sightline bundle verify bundle.tar");
    assert_eq!(
        c.sh_ok("stat -c '%a %U:%G' /etc/sightline/config.toml")
            .trim(),
        "600 root:root",
        "dpkg installs the configuration 0600"
    );
    assert!(
        c.exec(&["man", "-w", "sightline.toml"]).status.success() || !exists(&c, "/usr/bin/man"),
        "sightline.toml(5) is installed where man finds it"
    );
    assert!(exists(&c, "/usr/share/man/man5/sightline.toml.5.gz"));
    // (Its cluster stage may report errors: the stand-in k3s is no full API.)
    let status = String::from_utf8_lossy(&c.exec(&["sightline", "status"]).stdout).into_owned();
    assert!(status.contains("daemon: running"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("last converge:") && l.contains("— ok")),
        "{status}"
    );

    // Upgrade (here: the same version again): restarted, not just left running.
    let first = prop(&c, "sightline", "InvocationID");
    let out = c.exec(&["dpkg", "-i", "/root/sightline.deb"]);
    assert!(out.status.success(), "dpkg -i (upgrade):\n{}", show(&out));
    // Under load, systemd 252 in a container once failed to spawn the
    // restarted daemon (status=219/CGROUP, before sightline's code ran);
    // the unit's Restart=on-failure (RestartSec=10s) brings it back, and a
    // user sees it active then. A daemon that cannot start stays failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prop(&c, "sightline", "ActiveState") != "active" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        prop(&c, "sightline", "ActiveState"),
        "active",
        "{}",
        journal()
    );
    assert_ne!(
        prop(&c, "sightline", "InvocationID"),
        first,
        "restarted on upgrade"
    );
    assert_eq!(
        c.read_file("/etc/rancher/marker").as_deref(),
        Some("k3s owns this\n")
    );

    // Remove: stopped, the hint printed, configuration and state kept.
    let out = c.exec(&["dpkg", "-r", "sightline"]);
    assert!(out.status.success(), "dpkg -r:\n{}", show(&out));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("sightline uninstall"),
        "prerm points at `sightline uninstall`:\n{said}"
    );
    assert_eq!(prop(&c, "sightline", "ActiveState"), "inactive");
    assert_eq!(prop(&c, "sightline", "MainPID"), "0");
    assert!(
        c.exec(&["pgrep", "-x", "sightline"]).status.code() == Some(1),
        "no sightline process left"
    );
    assert!(!exists(&c, "/usr/bin/sightline"));
    assert!(
        exists(&c, "/etc/sightline/config.toml"),
        "remove keeps conffiles"
    );
    assert!(exists(&c, "/var/lib/sightline"), "remove keeps state");

    // Purge: sightline's state and generated files go; k3s's files and
    // other packages' files stay.
    let k3s_dropin = "/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml";
    let had_dropin = exists(&c, k3s_dropin);
    for f in [
        "/etc/systemd/system.conf.d/60-sightline-watchdog.conf",
        "/etc/systemd/system/sightline-throttle.timer.d/60-sightline.conf",
        "/etc/systemd/system/sightline-throttle.service.d/60-sightline.conf",
        "/run/node_exporter/textfile_collector/sightline.prom",
        "/run/node_exporter/textfile_collector/rpi_throttle.prom",
    ] {
        if !exists(&c, f) {
            c.write_file(f, "# as sightline writes it\n", 0o644);
        }
    }
    c.sh_ok("mkdir -p /etc/systemd/system/timers.target.wants && ln -sf /usr/lib/systemd/system/sightline-throttle.timer /etc/systemd/system/timers.target.wants/sightline-throttle.timer");
    let out = c.exec(&["dpkg", "-P", "sightline"]);
    assert!(out.status.success(), "dpkg -P:\n{}", show(&out));
    for gone in [
        "/var/lib/sightline",
        "/run/sightline",
        "/etc/sightline",
        "/etc/systemd/system.conf.d/60-sightline-watchdog.conf",
        "/etc/systemd/system/sightline-throttle.timer.d",
        "/etc/systemd/system/sightline-throttle.service.d",
        "/etc/systemd/system/timers.target.wants/sightline-throttle.timer",
        "/etc/systemd/system/multi-user.target.wants/sightline.service",
        "/run/node_exporter/textfile_collector/sightline.prom",
        "/run/node_exporter/textfile_collector/rpi_throttle.prom",
    ] {
        assert!(!exists(&c, gone), "purge leaves {gone} behind");
    }
    for kept in [
        "/etc/rancher/marker",
        "/var/lib/rancher/marker",
        "/etc/rancher/k3s",
        "/var/lib/rancher/k3s/server/tls/server-ca.crt",
        "/etc/systemd/system.conf.d/50-other.conf",
        "/run/node_exporter/textfile_collector/other.prom",
    ] {
        assert!(
            exists(&c, kept),
            "purge removed {kept}, which is not sightline's"
        );
    }
    if had_dropin {
        assert!(
            exists(&c, k3s_dropin),
            "purge never touches k3s's configuration"
        );
    }
    let status = c.exec(&["dpkg", "-s", "sightline"]);
    assert!(
        !status.status.success(),
        "dpkg still knows sightline after purge:\n{}",
        show(&status)
    );
}

#[test]
fn the_sysext_merges_as_a_directory_and_as_a_raw_image_and_the_service_runs_from_usr() {
    if !tools(&["mksquashfs", "strip", "readelf"]) {
        return;
    }
    let tree = sysext_tree();
    let raw = sysext_raw();
    let ign = ignition();
    let p = match Container::prepare("sysext") {
        Ok(p) => p,
        Err(skip) => return skip.report(),
    };
    install_standin_k3s(&p);
    // systemd-sysext merges an image only on a host whose os-release
    // matches its extension-release (ID, SYSEXT_LEVEL): let this container
    // identify as Flatcar does.
    p.write_file(
        "/usr/lib/os-release",
        "NAME=\"Flatcar Container Linux (test stand-in)\"\nID=flatcar\nID_LIKE=coreos\nVERSION_ID=4230.2.0\nSYSEXT_LEVEL=1.0\n",
        0o644,
    );
    common::copy_tree(tree, &p.host_path("/var/lib/extensions/sightline"));
    // Enable the unit exactly as the Ignition config does.
    let wants = "/etc/systemd/system/multi-user.target.wants/sightline.service";
    let target = ign_link(&ign, wants)["target"]
        .as_str()
        .unwrap()
        .to_string();
    let wants_host = p.host_path(wants);
    fs::create_dir_all(wants_host.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &wants_host).unwrap();
    p.write_file("/etc/sightline/config.d/50-test.toml", TEST_CONFIG, 0o644);
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    wait_until("k3s active", Duration::from_secs(30), || {
        prop(&c, "k3s", "ActiveState") == "active"
    });
    assert!(!exists(&c, "/usr/bin/sightline"));

    // The directory form.
    c.sh_ok("systemd-sysext merge");
    let status = c.sh_ok("systemd-sysext status");
    assert!(status.contains("sightline"), "{status}");
    // What Flatcar does after merging at boot: tmpfiles (systemd-tmpfiles-
    // setup.service runs after systemd-sysext.service), then
    // ensure-sysext.service reloads the units and re-evaluates
    // multi-user.target, which starts the enabled unit.
    c.sh_ok("systemd-tmpfiles --create /usr/lib/tmpfiles.d/sightline.conf && systemctl daemon-reload && systemctl start multi-user.target");
    let journal = || c.sh_ok("journalctl -u sightline --no-pager -o cat | tail -40");
    wait_until(
        "sightline active from the extension",
        Duration::from_secs(120),
        || {
            let s = prop(&c, "sightline", "ActiveState");
            assert!(s != "failed", "sightline failed:\n{}", journal());
            s == "active"
        },
    );
    assert_eq!(unit_file(&c), "/usr/lib/systemd/system/sightline.service");
    assert_eq!(prop(&c, "sightline", "ExecMainStatus"), "0");
    assert_eq!(prop(&c, "sightline", "UnitFileState"), "enabled");
    let pid = prop(&c, "sightline", "MainPID");
    assert_eq!(
        c.sh_ok(&format!("readlink /proc/{pid}/exe")).trim(),
        "/usr/bin/sightline"
    );
    assert!(!journal().contains("226/NAMESPACE"), "{}", journal());
    let config = c.sh_ok("sightline config");
    assert!(
        config.contains("/usr/lib/sightline/config.d/10-package.toml"),
        "{config}"
    );
    c.sh_ok("systemctl stop sightline && systemd-sysext unmerge && rm -rf /var/lib/extensions/sightline");
    assert!(!exists(&c, "/usr/bin/sightline"));

    // The raw image, placed and linked as the Ignition config does.
    let link = ign_link(&ign, "/etc/extensions/sightline.raw");
    let placed = link["target"].as_str().unwrap();
    assert!(placed.starts_with("/opt/extensions/sightline/"), "{placed}");
    let placed = format!(
        "/opt/extensions/sightline/{}",
        raw.file_name().unwrap().to_str().unwrap()
    );
    c.install_file(raw, &placed, 0o644);
    c.sh_ok(&format!(
        "mkdir -p /etc/extensions && ln -s {placed} /etc/extensions/sightline.raw"
    ));
    if let Err(why) = loop_devices_in(&c, &placed) {
        return loud_skip("merging the raw image in a container", &why);
    }
    c.sh_ok("systemd-sysext merge");
    let status = c.sh_ok("systemd-sysext status");
    assert!(status.contains("sightline"), "{status}");
    c.sh_ok("systemctl daemon-reload && systemctl start multi-user.target");
    wait_until(
        "sightline active from the raw image",
        Duration::from_secs(120),
        || {
            let s = prop(&c, "sightline", "ActiveState");
            assert!(s != "failed", "sightline failed:\n{}", journal());
            s == "active"
        },
    );
    let pid = prop(&c, "sightline", "MainPID");
    assert_eq!(
        c.sh_ok(&format!("readlink /proc/{pid}/exe")).trim(),
        "/usr/bin/sightline"
    );
    let mounts = c.sh_ok("findmnt -rn -o FSTYPE,TARGET");
    assert!(
        mounts.lines().any(|l| l.starts_with("overlay /usr")),
        "/usr is the merged overlay:\n{mounts}"
    );
    // Detach the loop device before the container goes.
    c.sh_ok("systemctl stop sightline && systemd-sysext unmerge");
}

#[test]
fn systemd_dissect_recognises_the_raw_image_as_a_system_extension() {
    if !tools(&[
        "mksquashfs",
        "strip",
        "readelf",
        "systemd-dissect",
        "losetup",
    ]) {
        return;
    }
    let raw = sysext_raw();
    assert_eq!(
        raw.file_name().unwrap().to_str().unwrap(),
        format!("sightline-{VERSION}-{}.raw", sd_arch())
    );
    let sum = fs::read_to_string(raw.with_extension("raw.sha256")).unwrap();
    assert!(
        sum.ends_with(&format!("  sightline-{VERSION}-{}.raw\n", sd_arch())),
        "{sum}"
    );
    // Published beside the images, as the Flatcar sysext bakery does: the
    // index systemd-sysupdate reads, and the transfer.
    let dir = raw.parent().unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("SHA256SUMS")).unwrap(),
        sum,
        "SHA256SUMS lists the image"
    );
    assert_eq!(
        fs::read(dir.join("sightline.conf")).unwrap(),
        fs::read(repo().join("packaging/flatcar/sightline.conf")).unwrap()
    );
    if let Err(why) = host_loop_devices(raw) {
        return loud_skip("systemd-dissect of the raw image", &why);
    }
    // systemd-sysext sees the image under the name Ignition links it as.
    let d = tempfile::tempdir().unwrap();
    let named = d.path().join("sightline.raw");
    std::os::unix::fs::symlink(raw, &named).unwrap();
    let out = run_ok(Command::new("systemd-dissect").arg(&named));
    assert!(
        out.lines()
            .any(|l| l.contains('✓') && l.contains("extension for system")),
        "systemd-dissect does not see a system extension:\n{out}"
    );
    for want in [
        "ID=flatcar",
        "SYSEXT_LEVEL=1.0",
        &format!("ARCHITECTURE={}", sd_arch()),
    ] {
        assert!(out.contains(want), "extension-release lacks {want}:\n{out}");
    }
    // Regular files in the image (unsquashfs: systemd 252's dissect cannot list).
    let listing = run_ok(Command::new("unsquashfs").arg("-lls").arg(raw));
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last()?.strip_prefix("squashfs-root/"))
        .collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "usr/bin/sightline",
            "usr/lib/extension-release.d/extension-release.sightline",
            "usr/lib/sightline/config.d/10-package.toml",
            "usr/lib/systemd/system/sightline-throttle.service",
            "usr/lib/systemd/system/sightline-throttle.timer",
            "usr/lib/systemd/system/sightline.service",
            "usr/lib/tmpfiles.d/sightline.conf",
            "usr/share/doc/sightline/config.toml",
            "usr/share/sightline/bundle.tar",
            "usr/share/sightline/bundle.tar.sha256",
        ],
        "the image carries only /usr, and exactly this:\n{listing}"
    );
}

#[test]
fn the_committed_ignition_config_is_the_generated_one_and_valid() {
    let bu = repo().join("packaging/flatcar/sightline.bu");
    let ign_path = repo().join("packaging/flatcar/sightline.ign");
    if tool("python3") {
        let out = run(Command::new(repo().join("scripts/butane2ignition"))
            .arg("--check")
            .arg(&bu)
            .arg(&ign_path));
        assert!(
            out.status.success(),
            "packaging/flatcar/sightline.ign is not what scripts/butane2ignition makes of sightline.bu:\n{}",
            show(&out)
        );
    }
    if tool("ignition-validate") {
        let out = run(Command::new("ignition-validate").arg(&ign_path));
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "ignition-validate:\n{}",
            show(&out)
        );
    }

    let ign = ignition();
    assert_eq!(ign["ignition"]["version"], "3.3.0");
    let image = ign_link(&ign, "/etc/extensions/sightline.raw");
    assert_eq!(image["hard"], false);
    let placed = image["target"].as_str().unwrap();
    assert_eq!(
        placed,
        format!("/opt/extensions/sightline/sightline-{VERSION}-x86-64.raw"),
        "packaging/flatcar/sightline.bu still names another release than Cargo.toml's {VERSION}"
    );
    let file = ign_file(&ign, placed);
    assert!(
        file["contents"]["source"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{file}"
    );
    assert!(
        file["contents"]["verification"]["hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256-"),
        "{file}"
    );
    assert_eq!(file["mode"], 0o644);
    assert_eq!(
        ign_link(
            &ign,
            "/etc/systemd/system/multi-user.target.wants/sightline.service"
        )["target"],
        "/usr/lib/systemd/system/sightline.service"
    );
    let units = ign["systemd"]["units"].as_array().unwrap();
    assert!(
        units
            .iter()
            .any(|u| u["name"] == "sightline.service" && u["enabled"] == true),
        "{units:?}"
    );
    let config = ign_file(&ign, "/etc/sightline/config.toml");
    assert_eq!(config["mode"], 0o600, "the configuration may hold secrets");
    // Updates: the transfer is the shipped one, the timer is on, and
    // systemd-sysupdate.service updates the component before its own run.
    let transfer = ign_file(&ign, "/etc/sysupdate.sightline.d/sightline.conf");
    assert_eq!(
        data_url(transfer["contents"]["source"].as_str().unwrap()),
        fs::read_to_string(repo().join("packaging/flatcar/sightline.conf")).unwrap(),
        "the Butane config inlines packaging/flatcar/sightline.conf"
    );
    assert!(
        units
            .iter()
            .any(|u| u["name"] == "systemd-sysupdate.timer" && u["enabled"] == true),
        "{units:?}"
    );
    let service = units
        .iter()
        .find(|u| u["name"] == "systemd-sysupdate.service")
        .expect("a drop-in for systemd-sysupdate.service");
    let dropins = service["dropins"].as_array().unwrap();
    let ours = dropins
        .iter()
        .find(|d| d["name"] == "sightline.conf")
        .expect("the sightline drop-in");
    assert!(
        ours["contents"]
            .as_str()
            .unwrap()
            .contains("ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C sightline update"),
        "{ours}"
    );
    // k3s from the bakery: its image, linked and enabled.
    let k3s = ign_link(&ign, "/etc/extensions/k3s.raw")["target"]
        .as_str()
        .unwrap();
    assert!(
        ign_file(&ign, k3s)["contents"]["source"]
            .as_str()
            .unwrap()
            .starts_with("https://extensions.flatcar.org/extensions/k3s-")
    );
    assert_eq!(
        ign_link(
            &ign,
            "/etc/systemd/system/multi-user.target.wants/k3s.service"
        )["target"],
        "/usr/local/lib/systemd/system/k3s.service"
    );
    assert_sightline_accepts_config(
        "the Ignition config",
        &data_url(config["contents"]["source"].as_str().unwrap()),
    );
}

#[test]
fn butane2ignition_refuses_what_it_does_not_translate() {
    if !tool("python3") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cases = [
        ("variant: fcos\nversion: 1.5.0\n", "only variant: flatcar"),
        (
            "variant: flatcar\nversion: 1.0.0\nstorage:\n  directories:\n    - path: /x\n",
            "unsupported key(s) directories",
        ),
        (
            "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n    - path: /x\n      contents:\n        source: https://e.org/x\n        verification:\n          hash: md5-00\n",
            "is not sha256",
        ),
        (
            "variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n    - name: x.service\n      mask: true\n",
            "unsupported key(s) mask",
        ),
        (
            "variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n    - name: x.service\n      dropins:\n        - name: x.txt\n",
            "is not a drop-in file name",
        ),
    ];
    for (i, (bu, why)) in cases.iter().enumerate() {
        let f = d.path().join(format!("{i}.bu"));
        fs::write(&f, bu).unwrap();
        let out = run(Command::new(repo().join("scripts/butane2ignition")).arg(&f));
        assert!(!out.status.success(), "accepted:\n{bu}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{bu}\n{}",
            show(&out)
        );
    }
}

/// True when scripts/test-deps has set up trixie's cloud-init (like [`tool`]).
fn trixie_cloud_init() -> bool {
    available(
        common_cache().join("cloud-init-trixie/.ok").is_file(),
        "cloud-init 25 (trixie) is not set up",
    )
}

#[test]
fn the_cloud_init_user_data_passes_cloud_init_22_4_and_25() {
    let path = repo().join("packaging/cloud-init/user-data");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#cloud-config\n"));
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let file = &doc["write_files"][0];
    assert_eq!(file["path"].as_str(), Some("/etc/sightline/config.toml"));
    assert_eq!(
        file["permissions"].as_str(),
        Some("0600"),
        "the configuration may hold secrets"
    );
    assert_sightline_accepts_config(
        "the cloud-init user-data",
        file["content"].as_str().unwrap(),
    );
    let runcmd = serde_yaml_ng::to_string(&doc["runcmd"]).unwrap();
    assert!(
        runcmd.contains("/boot/firmware/sightline_*_arm64.deb"),
        "installs the file scripts/build-deb names:\n{runcmd}"
    );
    assert!(
        runcmd.contains("systemctl enable --now sightline.service"),
        "{runcmd}"
    );

    for (version, available) in [("22.4", tool("cloud-init")), ("25", trixie_cloud_init())] {
        if !available {
            continue;
        }
        let t = Instant::now();
        let out = run(Command::new(repo().join("scripts/cloud-init-schema"))
            .arg(version)
            .arg(&path));
        assert!(
            out.status.success(),
            "cloud-init {version} rejects {}:\n{}",
            path.display(),
            show(&out)
        );
        eprintln!("cloud-init {version} schema: {:.1?}", t.elapsed());
    }
}

#[test]
fn packaging_scripts_are_shellcheck_clean() {
    if !tool("shellcheck") {
        return;
    }
    run_ok(
        Command::new("shellcheck")
            .arg("-x")
            .args([
                "scripts/build-deb",
                "scripts/build-sysext",
                "scripts/cloud-init-schema",
                "packaging/common/build-lib.sh",
            ])
            .current_dir(repo()),
    );
    run_ok(
        Command::new("shellcheck")
            .args([
                "-s",
                "sh",
                "packaging/deb/postinst",
                "packaging/deb/prerm",
                "packaging/deb/postrm",
            ])
            .current_dir(repo()),
    );
}

/// systemd-sysupdate 254 unpacked by scripts/test-deps (Debian bookworm's
/// systemd 252 is built without systemd-sysupdate; bookworm-backports' 254
/// ships it), like [`tool`].
fn sysupdate_254() -> Option<PathBuf> {
    let root = common_cache().join("sysupdate-254/root");
    available(
        root.join("run-sysupdate").is_file(),
        "systemd-sysupdate 254 is not set up",
    )
    .then_some(root)
}

/// The cache scripts/test-deps fills.
fn common_cache() -> PathBuf {
    std::env::var_os("SIGHTLINE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache"))
                .join("sightline")
        })
}

/// The release directory scripts/build-sysext writes (image, SHA256SUMS,
/// transfer) served over loopback HTTP in a container, and a node that runs
/// an older release placed and linked as the Ignition config does: the
/// shipped transfer (only its Path= pointed at the server) finds the new
/// version, installs it, checks it against SHA256SUMS and moves the link;
/// an image whose checksum does not match is refused and the link stays.
#[test]
fn systemd_sysupdate_installs_a_new_release_from_sha256sums_and_moves_the_link() {
    if !tools(&["mksquashfs", "strip", "readelf"]) {
        return;
    }
    let Some(sysupdate) = sysupdate_254() else {
        return;
    };
    let raw = sysext_raw();
    let release = raw.parent().unwrap();
    let ign = ignition();
    let p = match Container::prepare("sysupdate") {
        Ok(p) => p,
        Err(skip) => return skip.report(),
    };
    p.write_file(
        "/usr/lib/os-release",
        "NAME=\"Flatcar Container Linux (test stand-in)\"\nID=flatcar\nID_LIKE=coreos\nVERSION_ID=4230.2.0\nSYSEXT_LEVEL=1.0\n",
        0o644,
    );
    let name = raw.file_name().unwrap().to_str().unwrap().to_string();
    for f in [name.as_str(), "SHA256SUMS", "sightline.conf"] {
        p.install_file(release.join(f), &format!("/srv/release/{f}"), 0o644);
    }
    // The node as first provisioned with an older release (the same image
    // under an older version's name), linked as Ignition links it.
    let old = format!(
        "/opt/extensions/sightline/sightline-0.0.1-{}.raw",
        sd_arch()
    );
    p.install_file(raw, &old, 0o644);
    let link = p.host_path("/etc/extensions/sightline.raw");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&old, &link).unwrap();
    // The transfer exactly as Ignition writes it, but for the source URL.
    let shipped = data_url(
        ign_file(&ign, "/etc/sysupdate.sightline.d/sightline.conf")["contents"]["source"]
            .as_str()
            .unwrap(),
    );
    let upstream = "Path=https://github.com/sightline-dev/sightline/releases/latest/download/\n";
    assert_eq!(shipped.matches(upstream).count(), 1, "{shipped}");
    let port = 8089;
    let local = shipped.replace(upstream, &format!("Path=http://127.0.0.1:{port}/\n"));
    p.write_file("/etc/sysupdate.sightline.d/sightline.conf", &local, 0o644);
    common::copy_tree(&sysupdate, &p.host_path("/opt/sysupdate-254"));
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));

    c.sh_ok(&format!(
        "systemd-run --unit=release-server python3 -m http.server {port} --bind 127.0.0.1 --directory /srv/release"
    ));
    wait_until("the release server", Duration::from_secs(30), || {
        c.exec(&[
            "python3",
            "-c",
            &format!("import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/SHA256SUMS')"),
        ])
        .status
        .success()
    });
    let sysupdate = |args: &str| {
        c.sh(&format!(
            "/opt/sysupdate-254/run-sysupdate -C sightline {args}"
        ))
    };
    let ok = |args: &str| {
        let out = sysupdate(args);
        assert!(
            out.status.success(),
            "systemd-sysupdate {args}:\n{}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let list = ok("list");
    let row = |v: &str| {
        list.lines()
            .find(|l| l.split_whitespace().any(|w| w == v))
            .unwrap_or_else(|| panic!("systemd-sysupdate list has no {v}:\n{list}"))
            .to_string()
    };
    assert!(row("0.0.1").contains("current"), "{list}");
    assert!(row(VERSION).contains("candidate"), "{list}");
    assert_eq!(ok("check-new").trim(), VERSION);

    ok("update");
    let placed = format!("/opt/extensions/sightline/{name}");
    assert_eq!(
        c.sh_ok("readlink -f /etc/extensions/sightline.raw").trim(),
        placed,
        "CurrentSymlink= moves the link Ignition made"
    );
    c.sh_ok(&format!("cmp {placed} /srv/release/{name}"));
    assert!(
        exists(&c, &old),
        "the previous image stays (InstancesMax=3)"
    );
    let list = ok("list");
    assert!(
        list.lines()
            .any(|l| l.contains(VERSION) && l.contains("current")),
        "{list}"
    );

    // A newer release whose image does not match SHA256SUMS is refused.
    let bad = format!("sightline-99.0.0-{}.raw", sd_arch());
    c.sh_ok(&format!(
        "cd /srv/release && cp {name} {bad} && echo tampered >> {bad} && \
         sha256sum {name} | sed 's/{name}/{bad}/' >> SHA256SUMS"
    ));
    let out = sysupdate("update");
    assert!(
        !out.status.success(),
        "systemd-sysupdate installed an image whose SHA-256 does not match SHA256SUMS:\n{}",
        show(&out)
    );
    assert_eq!(
        c.sh_ok("readlink -f /etc/extensions/sightline.raw").trim(),
        placed,
        "a refused update leaves the link alone"
    );
    assert!(!exists(&c, &format!("/opt/extensions/sightline/{bad}")));

    // What the link now names is the extension systemd-sysext merges.
    if let Err(why) = loop_devices_in(&c, &placed) {
        return loud_skip("merging the updated image", &why);
    }
    c.sh_ok("systemd-sysext merge");
    assert_eq!(
        c.sh_ok("sightline -V").trim(),
        format!("sightline {VERSION}")
    );
    c.sh_ok("systemd-sysext unmerge");
}
