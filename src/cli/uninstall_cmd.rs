//! `sightline uninstall`: the cluster stages, then the host files.

use anyhow::Result;

use super::out;
use super::output::{bullet_list, change_line};
use super::{EXIT_CLUSTER_PENDING, EXIT_OK};
use crate::agent::uninstall::{
    ClusterRemoval, UninstallOptions, UninstallOutcome, UninstallPreview,
};
use crate::agent::{self, Ctx};
use crate::rollout::Progress;

/// Runs `uninstall` (or shows what it would do, with `--dry-run`).
pub fn run(ctx: &Ctx, json: bool, dry_run: bool, opts: UninstallOptions) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let rt = agent::runtime()?;
    if dry_run {
        let preview = rt.block_on(agent::uninstall::preview(ctx, &cfg, opts))?;
        if json {
            super::print_json(&preview)?;
        } else {
            out::out!("{}", render_preview(&preview));
        }
        return Ok(EXIT_OK);
    }
    ctx.require_root_user("uninstall")?;
    let progress = if json {
        Progress::Log
    } else {
        Progress::for_stdout()
    };
    let outcome = rt.block_on(agent::uninstall::uninstall(ctx, &cfg, opts, progress))?;
    if json {
        super::print_json(&outcome)?;
    } else {
        out::out!("{}", render(&outcome));
    }
    Ok(match outcome.cluster {
        ClusterRemoval::Left { .. } => EXIT_CLUSTER_PENDING,
        _ => EXIT_OK,
    })
}

fn render_preview(p: &UninstallPreview) -> String {
    let mut s = String::from(
        "sightline.service, when running, is stopped and disabled first (it would put back what uninstall removes)\n\n",
    );
    if p.stage_files.is_empty() {
        s.push_str("cluster: no stage recorded, nothing to prune\n");
    } else if p.keep_cluster {
        s.push_str(&format!(
            "cluster: would leave {} stage file(s) in place (--keep-cluster), and their record in state.json:\n",
            p.stage_files.len()
        ));
        s.push_str(&bullet_list(&p.stage_files, 2));
    } else {
        s.push_str(&format!(
            "cluster: would prune {} stage file(s), last first (empty each, wait for k3s to delete its objects, remove it):\n",
            p.stage_files.len()
        ));
        let mut files = p.stage_files.clone();
        files.reverse();
        s.push_str(&bullet_list(&files, 2));
    }
    let visible: Vec<_> = p
        .host
        .plan
        .changes
        .iter()
        .filter(|c| c.is_visible())
        .collect();
    if visible.is_empty() {
        s.push_str("\nhost: nothing sightline wrote is left\n");
    } else {
        s.push_str(&format!(
            "\nhost: would make {} change(s):\n",
            visible.len()
        ));
        for c in visible {
            s.push_str(&change_line(c));
        }
    }
    let effects = p.host.plan.all_effects();
    if !effects.is_empty() {
        s.push_str("\nfollow-up effects:\n");
        for e in effects {
            s.push_str(&format!("  - {e}\n"));
        }
    }
    if !p.metrics_files.is_empty() {
        s.push_str("\nwould remove sightline's metrics textfiles:\n");
        s.push_str(&bullet_list(&p.metrics_files, 2));
    }
    s
}

fn render(o: &UninstallOutcome) -> String {
    let mut s = String::new();
    if o.daemon_stopped {
        s.push_str("sightline.service: stopped and disabled, so it does not put anything back\n");
    }
    match &o.cluster {
        ClusterRemoval::NothingDeployed => {
            s.push_str("cluster: no stage recorded, nothing to prune\n")
        }
        ClusterRemoval::Pruned { stages } => {
            s.push_str(&format!("cluster: pruned {} stage(s)\n", stages.len()));
        }
        ClusterRemoval::KeptOnRequest { files } => {
            s.push_str(&format!(
                "cluster: left {} stage file(s) in place (--keep-cluster); state.json keeps their record, so a later `sightline uninstall` prunes them:\n",
                files.len()
            ));
            s.push_str(&bullet_list(files, 2));
        }
        ClusterRemoval::Left { reason, files, .. } => {
            s.push_str(&format!(
                "cluster: could not prune: {reason}\n  left {} stage file(s) in place; state.json keeps their record, so `sightline uninstall` again, once k3s answers, prunes them:\n",
                files.len()
            ));
            s.push_str(&bullet_list(files, 2));
        }
    }
    s.push('\n');
    s.push_str(&super::output::render_apply(&o.host));
    for p in &o.removed_metrics {
        s.push_str(&format!("removed {p}\n"));
    }
    for k in &o.kept {
        s.push_str(&format!("left in place: {k}\n"));
    }
    s
}
