//! Pacing k3s restarts under systemd's start rate limit.
//!
//! systemd refuses a start once a unit was started `StartLimitBurst` times
//! within `StartLimitIntervalUSec` and leaves it `failed` with
//! `start-limit-hit` (systemd src/core/unit.c `unit_test_start_limit`,
//! src/basic/ratelimit.c `ratelimit_below`). Restart jobs and Restart=
//! restarts count alike. sightline records when it started k3s (in the state,
//! saved before the restart so a killed run counts too) and waits rather
//! than spend the last start of the window, which is left for Restart=.

use std::time::Duration;

use anyhow::Result;
use tracing::{info, warn};

use super::ops::Ops;
use crate::clock::now_us;
use crate::config::Config;
use crate::state::State;
use crate::sysroot::Sysroot;

/// The longest sightline waits for the window to pass; a unit with a longer
/// window is restarted anyway, and a start refused then is reset and retried.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// How long to wait before the next start so that, counting it, at most
/// `burst - 1` starts fall in the window. `starts` are µs timestamps.
pub fn wait_needed(starts: &[u64], interval_us: u64, burst: u32, now: u64) -> Duration {
    if interval_us == 0 || burst == 0 {
        return Duration::ZERO;
    }
    let allowed = (burst as usize).saturating_sub(1).max(1);
    let mut recent: Vec<u64> = starts
        .iter()
        .copied()
        .filter(|t| now.saturating_sub(*t) < interval_us)
        .collect();
    recent.sort_unstable();
    if recent.len() < allowed {
        return Duration::ZERO;
    }
    // The start that must leave the window before this one may happen.
    let oldest = recent[recent.len() - allowed];
    Duration::from_micros((oldest + interval_us).saturating_sub(now))
}

/// Waits until another start of `unit` stays within its rate limit, then
/// records the start (saved, so that a kill after it still counts).
pub async fn before_start<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &Config,
    state: &mut State,
    unit: &str,
) -> Result<()> {
    let limit = match ops.start_limit(unit).await {
        Ok(l) => l,
        Err(e) => {
            warn!(unit, error = %format!("{e:#}"), "cannot read the start rate limit; not pacing");
            None
        }
    };
    if let Some(l) = limit {
        let wait = wait_needed(
            &state.k3s.recent_starts_us,
            l.interval_us,
            l.burst,
            now_us(),
        );
        if !wait.is_zero() {
            let wait = wait.min(MAX_WAIT);
            info!(
                unit,
                wait_ms = wait.as_millis() as u64,
                burst = l.burst,
                interval_us = l.interval_us,
                "waiting for the start rate limit window before restarting"
            );
            tokio::time::sleep(wait).await;
        }
        let now = now_us();
        state
            .k3s
            .recent_starts_us
            .retain(|t| now.saturating_sub(*t) < l.interval_us);
    }
    state.k3s.recent_starts_us.push(now_us());
    state.save(root, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_start_of_the_window_is_left_for_restart_always() {
        let s = 1_000_000;
        // burst 5 in 10 s: four starts may be ours.
        assert_eq!(wait_needed(&[], 10 * s, 5, 100 * s), Duration::ZERO);
        let three = [97 * s, 98 * s, 99 * s];
        assert_eq!(wait_needed(&three, 10 * s, 5, 100 * s), Duration::ZERO);
        let four = [96 * s, 97 * s, 98 * s, 99 * s];
        assert_eq!(
            wait_needed(&four, 10 * s, 5, 100 * s),
            Duration::from_secs(6)
        );
        // Starts outside the window do not count.
        let old = [10 * s, 20 * s, 30 * s, 40 * s];
        assert_eq!(wait_needed(&old, 10 * s, 5, 100 * s), Duration::ZERO);
        // No limit configured.
        assert_eq!(wait_needed(&four, 0, 5, 100 * s), Duration::ZERO);
        assert_eq!(wait_needed(&four, 10 * s, 0, 100 * s), Duration::ZERO);
        // burst 1: every start must be a window apart.
        assert_eq!(
            wait_needed(&[99 * s], 10 * s, 1, 100 * s),
            Duration::from_secs(9)
        );
    }
}
