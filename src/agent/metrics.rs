//! sightline's own health as node_exporter textfile metrics.

use std::fmt::Write as _;

use std::time::SystemTime;

use super::status::Status;
use crate::state::{StageState, State};

/// Renders the metrics. `converged_at` is the time of the converge they
/// describe, not the time they are written.
pub fn render(
    state: &State,
    st: &Status,
    converged_at: SystemTime,
    rss_bytes: Option<u64>,
) -> String {
    let mut t = Textfile::default();
    converge_metrics(&mut t, state, st, converged_at);
    stage_metrics(&mut t, st);
    process_metrics(&mut t, st, rss_bytes);
    t.0
}

/// A node_exporter textfile being written.
#[derive(Default)]
struct Textfile(String);

impl Textfile {
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }
}

fn converge_metrics(t: &mut Textfile, state: &State, st: &Status, converged_at: SystemTime) {
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        t.metric(name, kind, help, samples)
    };
    let converged_unix = converged_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ok = st.last_converge.as_ref().is_some_and(|c| c.ok);
    metric(
        "sightline_last_converge_timestamp_seconds",
        "gauge",
        "Unix time of the last converge.",
        &[(String::new(), converged_unix as f64)],
    );
    metric(
        "sightline_converge_success",
        "gauge",
        "1 when the last converge succeeded.",
        &[(String::new(), f64::from(u8::from(ok)))],
    );
    metric(
        "sightline_drift_repairs_total",
        "counter",
        "Managed files repaired after something else changed them.",
        &[(String::new(), state.counters.drift_repairs as f64)],
    );
    metric(
        "sightline_k3s_restarts_total",
        "counter",
        "k3s restarts performed by sightline.",
        &[(String::new(), state.counters.k3s_restarts as f64)],
    );
    metric(
        "sightline_rollbacks_total",
        "counter",
        "Automatic rollbacks after k3s did not come back.",
        &[(String::new(), state.counters.rollbacks as f64)],
    );
    metric(
        "sightline_pending_effects",
        "gauge",
        "Follow-up effects not yet executed.",
        &[(String::new(), st.pending_effects.len() as f64)],
    );
}

fn stage_metrics(t: &mut Textfile, st: &Status) {
    if !st.stages.is_empty() {
        let samples: Vec<(String, f64)> = st
            .stages
            .iter()
            .map(|s| {
                (
                    format!("{{stage=\"{}\"}}", s.name),
                    f64::from(u8::from(s.state == StageState::Healthy)),
                )
            })
            .collect();
        t.metric(
            "sightline_stage_healthy",
            "gauge",
            "1 when the rollout stage is healthy.",
            &samples,
        );
    }
}

fn process_metrics(t: &mut Textfile, st: &Status, rss_bytes: Option<u64>) {
    if let Some(rss) = rss_bytes {
        t.metric(
            "sightline_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process that wrote this file.",
            &[(String::new(), rss as f64)],
        );
    }
    t.metric(
        "sightline_info",
        "gauge",
        "sightline version and decisions.",
        &[(
            format!(
                "{{version=\"{}\",tier=\"{}\",runtime_security=\"{}\"}}",
                env!("CARGO_PKG_VERSION"),
                st.tier.as_deref().unwrap_or(""),
                st.runtime_security.as_deref().unwrap_or("")
            ),
            1.0,
        )],
    );
}

/// The resident memory of this process, via sysinfo.
pub fn own_rss() -> Option<u64> {
    let pid = sysinfo::get_current_pid().ok()?;
    let mut sys = sysinfo::System::new().ok()?;
    sys.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&[pid]),
        true,
        sysinfo::ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(pid).map(|p| p.memory())
}
