//! The daemon runs its converge and its cluster pass as tasks on one
//! thread. Here both run at once, in-process and on one thread as in
//! `sightline run`: a cluster pass rolling the stack out against the
//! stand-in API server, and a converge that restarts k3s and waits for it
//! while it holds the state lock. Nothing may block the thread: no
//! deadlock, no false rollback, and the watchdog pings keep coming.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::kubefake::KubeFake;
use common::*;
use sightline::agent::{self, ClusterOutcome, Ctx, Mode};
use sightline::effects::Effect;
use sightline::engine::ops::{ActiveState, JobResult, LoadState, Ops, UnitStatus};
use sightline::engine::{ConvergeOptions, EffectOutcome, converge};
use sightline::facts::Facts;
use sightline::rollout::{Progress, RolloutResult};
use sightline::state::State;
use sightline::sysroot::Sysroot;

/// k3s that takes `slow` to answer /readyz after a restart, as a real one
/// does while it loads.
struct SlowK3s {
    restarted_at: Cell<Option<Instant>>,
    slow: Duration,
}

impl Ops for SlowK3s {
    async fn daemon_reload(&self) -> Result<()> {
        Ok(())
    }
    async fn set_runtime_watchdog(&self, usec: u64) -> Result<u64> {
        Ok(usec)
    }
    async fn enable_and_restart(&self, _unit: &str) -> Result<()> {
        Ok(())
    }
    async fn disable_and_stop(&self, _unit: &str) -> Result<()> {
        Ok(())
    }
    async fn restart_unit(&self, _unit: &str, _t: Duration) -> Result<JobResult> {
        self.restarted_at.set(Some(Instant::now()));
        Ok(JobResult::Done)
    }
    async fn unit_status(&self, _unit: &str) -> Result<UnitStatus> {
        Ok(UnitStatus {
            active_state: ActiveState::Active,
            sub_state: "running".into(),
            invocation_id: "1".into(),
            n_restarts: 0,
            exec_main_start_us: 1,
            load_state: LoadState::Loaded,
        })
    }
    async fn k3s_ready(&self) -> Result<(), String> {
        match self.restarted_at.get() {
            Some(t) if t.elapsed() < self.slow => Err("503: starting".into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn a_restart_during_a_cluster_pass_neither_deadlocks_nor_rolls_back() {
    let dir = fixture("pi4");
    let fake = KubeFake::start(dir.path());
    write(
        dir.path(),
        "/etc/sightline/config.toml",
        &format!(
            "[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\nready_timeout_seconds = 20\n[rollout]\naddon_timeout_seconds = 10\njob_timeout_seconds = 10\nworkloads_timeout_seconds = 10\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
    let root = Sysroot::new(dir.path());
    let ctx = Ctx {
        root: root.clone(),
        system_bus: None,
    };
    let cfg = sightline::config::load(&root).unwrap();
    let k3s = SlowK3s {
        restarted_at: Cell::new(None),
        slow: Duration::from_secs(2),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        // The watchdog pinger: one tick every 50 ms while anything runs.
        let pings = Rc::new(Cell::new(0u32));
        let longest_gap = Rc::new(Cell::new(Duration::ZERO));
        let (p, g) = (pings.clone(), longest_gap.clone());
        let pinger = tokio::task::spawn_local(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                g.set(g.get().max(last.elapsed()));
                last = Instant::now();
                p.set(p.get() + 1);
            }
        });
        let cluster = {
            let (ctx, cfg) = (ctx.clone(), cfg.clone());
            tokio::task::spawn_local(async move {
                agent::run_cluster(
                    &ctx,
                    &cfg,
                    Progress::Log,
                    false,
                    &agent::coordination::Memory::in_process(),
                )
                .await
            })
        };
        // Let the rollout get going, then converge as the daemon does:
        // under the state lock, with a k3s restart in it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let converge_report = {
            let _lock = agent::lock(&ctx, &cfg, Mode::Daemon).await.unwrap();
            let facts = Facts::detect(&root);
            let mut state = State::load(&root, &cfg.config).unwrap();
            converge(
                &root,
                &cfg,
                &facts,
                &mut state,
                Some(&k3s),
                ConvergeOptions::default(),
            )
            .await
        };
        let report = converge_report.expect("the converge succeeds");
        let restart = report
            .effects_run
            .iter()
            .find(|e| matches!(e.effect, Effect::RestartK3s { .. }))
            .expect("the audit change restarted k3s");
        assert!(
            matches!(restart.outcome, EffectOutcome::Done { .. }),
            "no rollback: {}",
            restart.outcome
        );
        let outcome = tokio::time::timeout(Duration::from_secs(60), cluster)
            .await
            .expect("the cluster pass finishes")
            .unwrap()
            .unwrap();
        match &outcome {
            ClusterOutcome::Rollout(r) => {
                assert_eq!(r.result, RolloutResult::Done, "{}", outcome.line())
            }
            other => panic!("{}", other.line()),
        }
        pinger.abort();
        assert!(
            longest_gap.get() < Duration::from_millis(500),
            "the thread stalled for {:?}",
            longest_gap.get()
        );
        assert!(pings.get() > 40, "{} pings", pings.get());
    });
    drop(fake);
}
