//! The safe-restart logic (restart, readiness, rollback, journal recovery)
//! against a scripted stand-in for systemd and k3s. The same code runs
//! against a real systemd in `systemd_nspawn.rs`.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use common::*;
use sightline::config;
use sightline::effects::Effect;
use sightline::engine::journal::{Journal, Phase};
use sightline::engine::ops::{ActiveState, JobResult, LoadState, Ops, StartLimit, UnitStatus};
use sightline::engine::{ConvergeOptions, EffectOutcome, converge};
use sightline::facts::Facts;
use sightline::state::State;
use sightline::sysroot::Sysroot;

const POLICY: &str = "/etc/rancher/k3s/audit-policy.yaml";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml";

/// A fake k3s: on every (re)start it "loads" the audit policy on disk and
/// becomes ready unless the policy contains `REJECT`.
struct FakeK3s {
    root: PathBuf,
    ready: RefCell<bool>,
    restarts: RefCell<Vec<Option<String>>>,
    n_restarts: RefCell<u32>,
    start_us: RefCell<u64>,
    watchdog: RefCell<u64>,
    watchdog_cap: Option<u64>,
    calls: RefCell<Vec<String>>,
    /// StartLimitIntervalUSec / StartLimitBurst of the unit.
    start_limit: Option<StartLimit>,
    /// Start times within the rate-limit window.
    starts: RefCell<Vec<u64>>,
    /// `failed`, as after `start-limit-hit` or a crash.
    failed: RefCell<bool>,
    /// `inactive`: stopped by an administrator.
    stopped: RefCell<bool>,
    /// Bumped on every start, by sightline or anyone else.
    invocation: RefCell<u32>,
    /// When set, k3s becomes ready only on a drop-in containing this.
    require_in_dropin: Option<&'static str>,
}

impl FakeK3s {
    fn new(root: &Path) -> FakeK3s {
        FakeK3s {
            root: root.to_path_buf(),
            ready: RefCell::new(true),
            restarts: RefCell::new(Vec::new()),
            n_restarts: RefCell::new(0),
            start_us: RefCell::new(1),
            watchdog: RefCell::new(0),
            watchdog_cap: None,
            calls: RefCell::new(Vec::new()),
            start_limit: None,
            starts: RefCell::new(Vec::new()),
            failed: RefCell::new(false),
            stopped: RefCell::new(false),
            invocation: RefCell::new(0),
            require_in_dropin: None,
        }
    }
    fn file(&self, host: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(host.trim_start_matches('/'))).ok()
    }
    /// `systemctl restart k3s` by someone else: k3s loads what is on disk.
    fn restart_from_outside(&self) {
        *self.invocation.borrow_mut() += 1;
        *self.start_us.borrow_mut() = sightline::clock::now_us();
    }
    fn restarts_by_sightline(&self) -> usize {
        self.calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("restart "))
            .count()
    }
    fn loaded_policies(&self) -> Vec<Option<String>> {
        self.restarts.borrow().clone()
    }
}

impl Ops for FakeK3s {
    async fn daemon_reload(&self) -> Result<()> {
        self.calls.borrow_mut().push("reload".into());
        Ok(())
    }
    async fn set_runtime_watchdog(&self, usec: u64) -> Result<u64> {
        let v = self.watchdog_cap.map_or(usec, |c| usec.min(c));
        *self.watchdog.borrow_mut() = v;
        Ok(v)
    }
    async fn enable_and_restart(&self, unit: &str) -> Result<()> {
        self.calls.borrow_mut().push(format!("enable {unit}"));
        // What EnableUnitFiles does on disk.
        let wants = self.root.join("etc/systemd/system/timers.target.wants");
        std::fs::create_dir_all(&wants)?;
        std::os::unix::fs::symlink(format!("/usr/lib/systemd/system/{unit}"), wants.join(unit))?;
        Ok(())
    }
    async fn disable_and_stop(&self, unit: &str) -> Result<()> {
        self.calls.borrow_mut().push(format!("disable {unit}"));
        Ok(())
    }
    async fn restart_unit(&self, unit: &str, _t: Duration) -> Result<JobResult> {
        self.calls.borrow_mut().push(format!("restart {unit}"));
        let now = sightline::clock::now_us();
        if let Some(l) = self.start_limit {
            // systemd src/core/unit.c unit_test_start_limit(): a start beyond
            // StartLimitBurst within StartLimitIntervalUSec is refused, the
            // job fails and the unit is left `failed` (start-limit-hit).
            self.starts
                .borrow_mut()
                .retain(|t| now.saturating_sub(*t) < l.interval_us);
            if self.starts.borrow().len() >= l.burst as usize {
                *self.failed.borrow_mut() = true;
                *self.ready.borrow_mut() = false;
                return Ok(JobResult::Failed);
            }
            self.starts.borrow_mut().push(now);
        }
        if *self.failed.borrow() {
            // A failed unit starts again on a job once below the limit.
            *self.failed.borrow_mut() = false;
        }
        *self.stopped.borrow_mut() = false;
        let policy = self.file(POLICY);
        let accepted = !policy.as_deref().is_some_and(|p| p.contains("REJECT"))
            && self
                .require_in_dropin
                .is_none_or(|m| self.file(DROPIN).is_some_and(|d| d.contains(m)));
        *self.ready.borrow_mut() = accepted;
        *self.start_us.borrow_mut() = now;
        *self.invocation.borrow_mut() += 1;
        self.restarts.borrow_mut().push(policy);
        Ok(if *self.ready.borrow() {
            JobResult::Done
        } else {
            JobResult::Failed
        })
    }
    async fn start_limit(&self, _unit: &str) -> Result<Option<StartLimit>> {
        Ok(self.start_limit)
    }
    async fn reset_failed(&self, unit: &str) -> Result<()> {
        // systemd unit_reset_failed(): clears `failed` and the start rate
        // limit counter (ratelimit_reset(&u->start_ratelimit)).
        self.calls.borrow_mut().push(format!("reset-failed {unit}"));
        *self.failed.borrow_mut() = false;
        self.starts.borrow_mut().clear();
        Ok(())
    }
    async fn unit_status(&self, _unit: &str) -> Result<UnitStatus> {
        Ok(UnitStatus {
            active_state: if *self.failed.borrow() {
                ActiveState::Failed
            } else if *self.stopped.borrow() {
                ActiveState::Inactive
            } else if *self.ready.borrow() {
                ActiveState::Active
            } else {
                ActiveState::Activating
            },
            sub_state: "running".into(),
            invocation_id: format!("{:032x}", *self.invocation.borrow()),
            n_restarts: *self.n_restarts.borrow(),
            exec_main_start_us: *self.start_us.borrow(),
            load_state: LoadState::Loaded,
        })
    }
    async fn k3s_ready(&self) -> Result<(), String> {
        if *self.ready.borrow() {
            Ok(())
        } else {
            // Restart=always: a rejected configuration crash-loops.
            *self.n_restarts.borrow_mut() += 1;
            Err("connection refused".into())
        }
    }
}

struct Env {
    _dir: tempfile::TempDir,
    root: Sysroot,
}

fn env(name: &str, config: &str) -> Env {
    let dir = fixture(name);
    write(
        dir.path(),
        "/etc/sightline/config.toml",
        &format!("[k3s]\nready_timeout_seconds = 10\n{config}"),
    );
    let root = Sysroot::new(dir.path());
    Env { _dir: dir, root }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn apply(
    env: &Env,
    ops: &FakeK3s,
    explicit: bool,
) -> Result<sightline::engine::ConvergeReport> {
    let cfg = config::load(&env.root).unwrap();
    let facts = Facts::detect(&env.root);
    let mut state = State::load(&env.root, &cfg.config).unwrap();
    let opts = ConvergeOptions {
        explicit,
        ..Default::default()
    };
    converge(&env.root, &cfg, &facts, &mut state, Some(ops), opts).await
}

fn state(env: &Env) -> State {
    let cfg = config::load(&env.root).unwrap();
    State::load(&env.root, &cfg.config).unwrap()
}

#[test]
fn first_apply_restarts_once_second_restarts_nothing() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        let r = apply(&e, &ops, true).await.unwrap();
        assert_eq!(ops.loaded_policies().len(), 1, "exactly one restart");
        assert!(
            r.effects_run
                .iter()
                .any(|x| matches!(x.effect, Effect::RestartK3s { .. })
                    && matches!(x.outcome, EffectOutcome::Done { .. }))
        );
        assert_eq!(*ops.watchdog.borrow(), 14_000_000);
        assert!(
            ops.calls
                .borrow()
                .contains(&"enable sightline-throttle.timer".to_string())
        );
        let r2 = apply(&e, &ops, true).await.unwrap();
        assert_eq!(ops.loaded_policies().len(), 1, "no second restart");
        assert!(r2.effects_run.is_empty(), "{:?}", r2.effects_run);
        assert!(state(&e).pending_effects.is_empty());
        assert!(
            Journal::load(&e.root, &config::load(&e.root).unwrap().config)
                .unwrap()
                .is_none()
        );
    });
}

#[test]
fn rejected_change_rolls_back_and_daemon_does_not_retry() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        let good = read(e.root.root(), POLICY);
        let good_dropin = read(e.root.root(), DROPIN);
        // A policy sightline accepts but this k3s refuses.
        write(e.root.root(), "/etc/sightline/custom-policy.yaml", &format!("# REJECT\n{good}"));
        write(
            e.root.root(),
            "/etc/sightline/config.toml",
            "[k3s]\nready_timeout_seconds = 60\n[audit]\npolicy_source = \"/etc/sightline/custom-policy.yaml\"\n",
        );
        let err = apply(&e, &ops, true).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("did not become ready"), "{msg}");
        assert!(msg.contains("previous configuration is restored"), "{msg}");
        assert!(msg.contains("/var/lib/sightline/rejected/"), "says where the rejected files are: {msg}");
        assert_eq!(read(e.root.root(), POLICY), good, "old policy back");
        assert_eq!(read(e.root.root(), DROPIN), good_dropin);
        assert!(msg.contains("crash-looping"), "detected well before the 60 s deadline: {msg}");
        let loaded = ops.loaded_policies();
        assert_eq!(loaded.len(), 3, "good, rejected, back to good");
        assert_eq!(loaded[2].as_deref(), Some(good.as_str()), "k3s ends on the old configuration");
        assert!(*ops.ready.borrow());
        let st = state(&e);
        let rej = st.k3s.rejected.clone().expect("rejection recorded");
        let kept = e.root.path(format!("{}{POLICY}", rej.kept_in));
        assert!(std::fs::read_to_string(kept).unwrap().contains("REJECT"));
        assert_eq!(st.counters.rollbacks, 1);

        // The daemon (not explicit) must not restart k3s into the same failure.
        let r = apply(&e, &ops, false).await.unwrap();
        assert_eq!(ops.loaded_policies().len(), 3, "no retry");
        assert!(r.plan.warnings.iter().any(|w| w.contains("rejected")), "{:?}", r.plan.warnings);
        assert_eq!(read(e.root.root(), POLICY), good);
    });
}

/// Leaves the root as a run killed after writing `policy` and before the
/// readiness check: journal in Restarting, written "in the future" so k3s's
/// start time cannot count as having loaded it.
fn interrupted_restart(e: &Env, paths: &[&str], policy: &str) -> sightline::config::LoadedConfig {
    let cfg = config::load(&e.root).unwrap();
    let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    let mut j = Journal::begin(
        &e.root,
        &cfg.config,
        &paths,
        Default::default(),
        None,
        Some("new".into()),
    )
    .unwrap();
    write(e.root.root(), POLICY, policy);
    j.written_at_us = sightline::clock::now_us() + 10_000_000;
    j.set_phase(&e.root, &cfg.config, Phase::Restarting)
        .unwrap();
    cfg
}

#[test]
fn interrupted_restart_is_finished_on_next_start() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        // k3s still runs the old (no) configuration.
        let policy = std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap();
        let cfg = interrupted_restart(&e, &[POLICY, DROPIN], &policy);
        let r = apply(&e, &ops, false).await.unwrap();
        assert!(
            r.recovered
                .as_deref()
                .unwrap_or_default()
                .contains("finished an interrupted k3s restart"),
            "{:?}",
            r.recovered
        );
        assert!(*ops.ready.borrow());
        assert!(
            Journal::load(&e.root, &cfg.config).unwrap().is_none(),
            "journal closed"
        );
    });
}

#[test]
fn interrupted_restart_that_fails_is_rolled_back() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        interrupted_restart(
            &e,
            &[POLICY],
            "# REJECT\napiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None}]\n",
        );
        let cfg2 = config::load(&e.root).unwrap();
        let facts = Facts::detect(&e.root);
        let mut st = State::load(&e.root, &cfg2.config).unwrap();
        let err = converge(
            &e.root,
            &cfg2,
            &facts,
            &mut st,
            Some(&ops),
            ConvergeOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("previous configuration is restored"),
            "{err:#}"
        );
        assert!(
            !e.root.path(POLICY).exists(),
            "the file did not exist before the change"
        );
        assert!(*ops.ready.borrow(), "k3s healthy in the end");
    });
}

#[test]
fn interrupted_write_is_undone_without_restart() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        let cfg = config::load(&e.root).unwrap();
        Journal::begin(
            &e.root,
            &cfg.config,
            &[POLICY.into()],
            Default::default(),
            None,
            None,
        )
        .unwrap();
        write(e.root.root(), POLICY, "half-writ");
        let r = apply(&e, &ops, false).await.unwrap();
        assert!(r.recovered.unwrap().contains("undone before k3s saw it"));
        assert_eq!(
            ops.loaded_policies().len(),
            1,
            "then the normal converge restarts once"
        );
        assert_eq!(
            read(e.root.root(), POLICY),
            std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap()
        );
    });
}

#[test]
fn pending_restart_is_dropped_when_k3s_started_after_the_write() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        // First boot: files written before k3s ever ran (--no-restart).
        let cfg = config::load(&e.root).unwrap();
        let facts = Facts::detect(&e.root);
        let mut st = State::load(&e.root, &cfg.config).unwrap();
        let opts = ConvergeOptions {
            no_restart: true,
            explicit: true,
            ..Default::default()
        };
        converge::<FakeK3s>(&e.root, &cfg, &facts, &mut st, None, opts)
            .await
            .unwrap();
        // k3s starts later on its own and loads them.
        *ops.start_us.borrow_mut() = sightline::clock::now_us() + 1;
        let r = apply(&e, &ops, false).await.unwrap();
        let restart = r
            .effects_run
            .iter()
            .find(|x| matches!(x.effect, Effect::RestartK3s { .. }))
            .unwrap();
        assert!(
            matches!(&restart.outcome, EffectOutcome::Skipped { reason } if reason.starts_with("k3s.service started after")),
            "{}",
            restart.outcome
        );
        assert!(ops.loaded_policies().is_empty(), "no restart at all");
        assert!(state(&e).k3s.loaded_digest.is_some());
    });
}

#[test]
fn watchdog_value_that_does_not_stick_fails_and_stays_pending() {
    let e = env("pi4", "");
    let mut ops = FakeK3s::new(e.root.root());
    ops.watchdog_cap = Some(10_000_000);
    rt().block_on(async {
        let err = apply(&e, &ops, true).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("reads back 10000000"),
            "{err:#}"
        );
        assert!(state(&e).pending_effects.contains(&Effect::ApplyWatchdog {
            runtime_usec: 14_000_000
        }));
    });
}

#[test]
fn uninstall_after_a_real_restart_restarts_k3s_without_the_flags() {
    let e = env("ubuntu-cilium", "");
    let ops = FakeK3s::new(e.root.root());
    let original = read(e.root.root(), POLICY);
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        let cfg = config::load(&e.root).unwrap();
        let facts = Facts::detect(&e.root);
        let r = sightline::engine::uninstall::uninstall(&e.root, &cfg, &facts, Some(&ops), false)
            .await
            .unwrap();
        assert!(
            r.host
                .effects_run
                .iter()
                .any(|x| matches!(x.effect, Effect::RestartK3s { .. })
                    && matches!(x.outcome, EffectOutcome::Done { .. }))
        );
        assert_eq!(
            ops.loaded_policies().last().unwrap().as_deref(),
            Some(original.as_str())
        );
        assert!(!e.root.path("/var/lib/sightline").exists(), "state cleared");
    });
}

async fn uninstall(
    env: &Env,
    ops: &FakeK3s,
) -> Result<sightline::engine::uninstall::UninstallReport> {
    let cfg = config::load(&env.root).unwrap();
    let facts = Facts::detect(&env.root);
    sightline::engine::uninstall::uninstall(&env.root, &cfg, &facts, Some(ops), false).await
}

#[test]
fn uninstall_removes_only_what_sightline_recorded_in_its_state_dir() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        write(
            e.root.root(),
            "/var/lib/sightline/notes/keep-me",
            "someone else's",
        );
        std::fs::create_dir_all(e.root.path("/var/lib/sightline/empty-foreign")).unwrap();
        let r = uninstall(&e, &ops).await.unwrap();
        assert_eq!(
            read(e.root.root(), "/var/lib/sightline/notes/keep-me"),
            "someone else's"
        );
        assert!(e.root.path("/var/lib/sightline/empty-foreign").is_dir());
        assert!(!e.root.path("/var/lib/sightline/state.json").exists());
        assert!(
            r.kept.iter().any(|k| k.contains("notes/keep-me")),
            "{:?}",
            r.kept
        );
    });
}

#[test]
fn uninstall_with_a_missing_backup_restores_the_rest_and_says_what_it_could_not() {
    let e = env("ubuntu-cilium", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        let backup = format!("/var/lib/sightline/backup{POLICY}");
        assert!(e.root.path(&backup).is_file(), "the original was backed up");
        std::fs::remove_file(e.root.path(&backup)).unwrap();
        let r = uninstall(&e, &ops).await.unwrap();
        let w = r.host.plan.warnings.join("\n");
        assert!(
            w.contains(&format!("could not restore the original {POLICY}")) && w.contains(&backup),
            "{w}"
        );
        assert!(!e.root.path(POLICY).exists(), "sightline's version removed");
        assert!(!e.root.path(DROPIN).exists(), "the rest is done");
        assert!(!e.root.path("/var/lib/sightline").exists(), "finished");
    });
}

/// The policy path is a relative link to a file of the site's own.
fn link_policy_to_a_site_file(e: &Env) {
    write(
        e.root.root(),
        "/etc/rancher/k3s/site-policy.yaml",
        "site: policy\n",
    );
    std::os::unix::fs::symlink("site-policy.yaml", e.root.path(POLICY)).unwrap();
}

fn assert_policy_is_the_site_link(e: &Env) {
    assert_eq!(
        std::fs::read_link(e.root.path(POLICY)).unwrap(),
        Path::new("site-policy.yaml")
    );
    assert_eq!(read(e.root.root(), POLICY), "site: policy\n");
}

#[test]
fn a_managed_file_that_was_a_symlink_is_restored_as_a_symlink() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    link_policy_to_a_site_file(&e);
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        assert!(
            !e.root.path(POLICY).is_symlink(),
            "sightline's file replaces the link"
        );
        assert_eq!(
            read(e.root.root(), "/etc/rancher/k3s/site-policy.yaml"),
            "site: policy\n",
            "the link's target is never written"
        );
        uninstall(&e, &ops).await.unwrap();
        assert_policy_is_the_site_link(&e);
    });
}

#[test]
fn an_admin_edit_is_reported_and_kept_before_uninstall_removes_it() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        let edited = format!("{}# tuned by the admin\n", read(e.root.root(), DROPIN));
        write(e.root.root(), DROPIN, &edited);
        let r = uninstall(&e, &ops).await.unwrap();
        let copy = format!("/var/lib/sightline/edited{DROPIN}");
        let w = r.host.plan.warnings.join("\n");
        assert!(
            w.contains(&format!("{DROPIN} was edited")) && w.contains(&copy),
            "{w}"
        );
        assert!(!e.root.path(DROPIN).exists());
        assert_eq!(read(e.root.root(), &copy), edited);
        assert!(r.kept.iter().any(|k| k.contains("edited")), "{:?}", r.kept);
    });
}

#[test]
fn a_half_failed_apply_then_uninstall_keeps_the_users_original() {
    let e = env("ubuntu-cilium", "");
    let ops = FakeK3s::new(e.root.root());
    let original = read(e.root.root(), POLICY);
    // The drop-in directory is a tmpfs with no inode to spare, so it reads
    // as empty but cannot be written: the policy is backed up and replaced,
    // then writing the drop-in fails (ENOSPC). Mounting needs root, as the
    // container tests do.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a full tmpfs needs root");
        assert_ne!(
            std::env::var("SIGHTLINE_NSPAWN_REQUIRED").as_deref(),
            Ok("1"),
            "root is required here"
        );
        return;
    }
    let dropins = e.root.path("/etc/rancher/k3s/config.yaml.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,nr_inodes=1", "tmpfs"])
        .arg(&dropins)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Unmount(dropins.clone());
    rt().block_on(async {
        let err = apply(&e, &ops, true).await.unwrap_err();
        assert!(format!("{err:#}").contains(DROPIN), "{err:#}");
        assert_ne!(
            read(e.root.root(), POLICY),
            original,
            "the policy was replaced"
        );
        let st = state(&e);
        assert_eq!(
            st.files[POLICY].backup.as_deref(),
            Some(format!("/var/lib/sightline/backup{POLICY}").as_str()),
            "the backup is recorded although the apply failed"
        );
        drop(guard);
        uninstall(&e, &ops).await.unwrap();
        assert_eq!(read(e.root.root(), POLICY), original);
    });
}

fn set_config(e: &Env, config: &str) {
    write(
        e.root.root(),
        "/etc/sightline/config.toml",
        &format!("[k3s]\nready_timeout_seconds = 10\n{config}"),
    );
}

#[test]
fn restarts_in_quick_succession_stay_within_the_start_limit() {
    let e = env("pi4", "");
    let mut ops = FakeK3s::new(e.root.root());
    ops.start_limit = Some(StartLimit {
        interval_us: 2_000_000,
        burst: 3,
    });
    rt().block_on(async {
        let started = std::time::Instant::now();
        for days in [1, 2, 3, 4] {
            set_config(&e, &format!("[audit]\nmax_age_days = {days}\n"));
            apply(&e, &ops, true)
                .await
                .unwrap_or_else(|err| panic!("apply {days}: {err:#}"));
            assert!(!*ops.failed.borrow(), "start-limit-hit after apply {days}");
        }
        assert_eq!(ops.restarts_by_sightline(), 4);
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "waited for the window: {:?}",
            started.elapsed()
        );
    });
}

/// A run killed during its restart of k3s (k3s then in whatever state the
/// test set); returns the next run's recovery note.
fn after_a_killed_restart(e: &Env, ops: &FakeK3s) -> String {
    rt().block_on(async {
        let policy = std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap();
        interrupted_restart(e, &[POLICY, DROPIN], &policy);
        apply(e, ops, false)
            .await
            .unwrap()
            .recovered
            .unwrap_or_default()
    })
}

#[test]
fn a_k3s_left_failed_by_an_interrupted_restart_is_reset_and_started() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    *ops.failed.borrow_mut() = true;
    *ops.ready.borrow_mut() = false;
    let recovered = after_a_killed_restart(&e, &ops);
    {
        assert!(
            ops.calls
                .borrow()
                .iter()
                .any(|c| c.starts_with("reset-failed")),
            "{:?}",
            ops.calls.borrow()
        );
        assert!(*ops.ready.borrow() && !*ops.failed.borrow());
        assert!(recovered.contains("finished an interrupted k3s restart"));
    }
}

#[test]
fn a_k3s_an_administrator_stopped_stays_stopped() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    *ops.stopped.borrow_mut() = true;
    let recovered = after_a_killed_restart(&e, &ops);
    assert_eq!(ops.restarts_by_sightline(), 0, "{:?}", ops.calls.borrow());
    assert!(*ops.stopped.borrow());
    assert!(recovered.contains("stays stopped"), "{recovered}");
}

#[test]
fn a_restart_by_someone_else_with_an_edited_dropin_needs_exactly_one_restart() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        assert_eq!(ops.restarts_by_sightline(), 1);
        // Someone restarts k3s on the files sightline wrote: nothing to do.
        ops.restart_from_outside();
        apply(&e, &ops, true).await.unwrap();
        assert_eq!(ops.restarts_by_sightline(), 1, "same files: no restart");
        // Someone edits the drop-in and restarts k3s: k3s runs the edit.
        let desired = read(e.root.root(), DROPIN);
        write(e.root.root(), DROPIN, &format!("{desired}# admin\n"));
        ops.restart_from_outside();
        apply(&e, &ops, true).await.unwrap();
        assert_eq!(read(e.root.root(), DROPIN), desired);
        assert_eq!(ops.restarts_by_sightline(), 2, "exactly one restart");
        apply(&e, &ops, true).await.unwrap();
        assert_eq!(ops.restarts_by_sightline(), 2, "then a no-op");
    });
}

#[test]
fn repairing_an_edit_k3s_runs_rolls_back_when_k3s_rejects_the_repair() {
    let e = env("pi4", "");
    let mut ops = FakeK3s::new(e.root.root());
    rt().block_on(async {
        apply(&e, &ops, true).await.unwrap();
        let desired = read(e.root.root(), DROPIN);
        write(e.root.root(), DROPIN, &format!("{desired}# admin\n"));
        ops.restart_from_outside();
        ops.require_in_dropin = Some("# admin");
        let err = apply(&e, &ops, true).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("previous configuration is restored"),
            "{err:#}"
        );
        assert!(
            read(e.root.root(), DROPIN).contains("# admin"),
            "rolled back"
        );
        assert!(*ops.ready.borrow());
    });
}

#[test]
fn a_rollback_restores_a_symlinked_policy_as_a_symlink() {
    let e = env("pi4", "");
    let ops = FakeK3s::new(e.root.root());
    link_policy_to_a_site_file(&e);
    let builtin = std::fs::read_to_string(repo().join("files/audit-policy.yaml")).unwrap();
    write(
        e.root.root(),
        "/etc/sightline/reject.yaml",
        &format!("{builtin}# REJECT\n"),
    );
    set_config(
        &e,
        "[audit]\npolicy_source = \"/etc/sightline/reject.yaml\"\n",
    );
    rt().block_on(async {
        let err = apply(&e, &ops, true).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("previous configuration is restored"),
            "{err:#}"
        );
        assert_policy_is_the_site_link(&e);
    });
}
