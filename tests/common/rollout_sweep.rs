//! The kill-point sweep of the rollout, on any node a test can run
//! sightline on: a scratch root (`tests/killpoints.rs`) or a container with
//! a real systemd and the stand-in k3s (`tests/systemd_nspawn.rs`).
//!
//! A full `apply` (host layer, then the stages through the stand-in API of
//! `kubefake.rs`) on a node whose tier flips between full and light, so
//! each apply writes the other tier's stage files and prunes the stages it
//! no longer has. sightline is SIGKILLed at every rollout point of every
//! stage in both directions; after each, the next apply must converge to
//! what an uninterrupted one leaves (exactly the desired stage files, no
//! temp file, intent settled, the same records), and a further apply must
//! write nothing. An apply spends most of its time waiting on the
//! stand-in's gates, so the points are shared among sweepers, each with its
//! own node and stand-in API.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::kubefake::KubeFake;
use super::{changed_paths, is_temp_file, snapshot, state_records};

/// Where sightline writes the stage files, relative to the node's `/`.
pub const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests/sightline";

/// A machine sightline runs on for the sweep.
pub trait Node {
    /// The host path of the node's `/`.
    fn root(&self) -> PathBuf;
    /// `sightline apply` (host layer and stages), SIGKILLed at `failpoint`
    /// when given; with `log`, the failpoints it passes are recorded for
    /// [`Node::take_log`].
    fn apply(&self, failpoint: Option<&str>, log: bool) -> Output;
    /// The failpoint log of the last logged apply; clears it.
    fn take_log(&self) -> String;
    /// The directories, relative to the root, that a no-op must not write
    /// under.
    fn watched(&self) -> Vec<PathBuf>;
    /// What else must hold after a killed apply and the next one.
    fn settled(&self, point: &str);
}

/// What an uninterrupted rollout leaves: the stage files (content and
/// mode), and the state's records of host files, directories, owed effects
/// and stages.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    files: BTreeMap<PathBuf, (Vec<u8>, u32)>,
    records: serde_json::Value,
}

fn outcome(root: &Path) -> Outcome {
    Outcome {
        files: snapshot(&root.join(MANIFESTS)),
        records: state_records(root, &["files", "dirs", "pending_effects", "stages"]),
    }
}

/// `name@n` for each line of a failpoint log, n counting the hits of each
/// name.
pub fn numbered(log: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    log.lines()
        .map(|name| {
            let n = seen.entry(name.to_string()).or_default();
            *n += 1;
            format!("{name}@{n}")
        })
        .collect()
}

/// The points a rollout passes that the sweep kills at: every `rollout.*`
/// point of every stage written and pruned, and the points inside the
/// atomic write of the first stage file and of the first emptied one (the
/// atomic write's points are swept at every durable write by the host
/// sweep; every stage file goes through the same write).
fn rollout_points(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut follow = 0;
    for p in numbered(log) {
        if p.starts_with("rollout.") {
            follow = if p == "rollout.write.before@1" || p == "rollout.prune.empty.before@1" {
                3
            } else {
                0
            };
            out.push(p);
        } else if p.starts_with("atomic.") && follow > 0 {
            out.push(p);
            follow -= 1;
        }
    }
    out
}

/// The node's config: the tier, and rollout timeouts short enough for the
/// stand-in.
fn set_tier(root: &Path, fake: &KubeFake, tier: &str) {
    super::write(
        root,
        "/etc/sightline/config.toml",
        &format!(
            "tier = \"{tier}\"\n[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\nready_timeout_seconds = 30\n[rollout]\naddon_timeout_seconds = 5\njob_timeout_seconds = 5\nworkloads_timeout_seconds = 3\nprune_timeout_seconds = 5\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under the watched directories, with content and mode
/// (`run` included: temp files must not be left there either).
fn watched(node: &impl Node) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let root = node.root();
    node.watched()
        .into_iter()
        // A directory not there yet holds nothing; files it gains show.
        .filter(|d| root.join(d).is_dir())
        .flat_map(|d| {
            snapshot(&root.join(&d))
                .into_iter()
                .map(move |(p, v)| (d.join(p), v))
        })
        .collect()
}

/// One sweeper: its node, converged to light, with the points an
/// uninterrupted apply passes each way and what it leaves.
struct Sweeper<N> {
    node: N,
    fake: KubeFake,
    points: BTreeMap<&'static str, Vec<String>>,
    want: BTreeMap<&'static str, Outcome>,
}

impl<N: Node> Sweeper<N> {
    fn new(node: N, fake: KubeFake) -> Sweeper<N> {
        let r = node.root();
        set_tier(&r, &fake, "light");
        check("first apply", &node.apply(None, false));
        let mut want = BTreeMap::new();
        let mut points = BTreeMap::new();
        for tier in ["full", "light"] {
            set_tier(&r, &fake, tier);
            check(tier, &node.apply(None, true));
            let p = rollout_points(&node.take_log());
            assert!(
                p.iter().any(|p| p.starts_with("rollout.write."))
                    && p.iter().any(|p| p.starts_with("rollout.prune."))
                    && p.iter().any(|p| p.starts_with("atomic.")),
                "{tier}: the apply neither wrote, pruned nor wrote atomically: {p:?}"
            );
            points.insert(tier, p);
            want.insert(tier, outcome(&r));
        }
        assert_ne!(want["full"], want["light"]);
        Sweeper {
            node,
            fake,
            points,
            want,
        }
    }

    /// Kills at the points whose index in the combined list is `i` modulo
    /// `n`, alternating directions so that each killed apply starts from
    /// the other tier, converged. Returns how many it swept.
    fn sweep(&self, i: usize, n: usize) -> usize {
        let mut queue: BTreeMap<&str, VecDeque<String>> = BTreeMap::new();
        let all = self
            .points
            .iter()
            .flat_map(|(t, p)| p.iter().map(move |p| (*t, p.clone())));
        for (_, (t, p)) in all.enumerate().filter(|(k, _)| k % n == i) {
            queue.entry(t).or_default().push_back(p);
        }
        let r = self.node.root();
        let mut at = "light";
        let mut swept = 0;
        while queue.values().any(|q| !q.is_empty()) {
            let to = if at == "light" { "full" } else { "light" };
            set_tier(&r, &self.fake, to);
            match queue.get_mut(to).and_then(|q| q.pop_front()) {
                Some(point) => {
                    self.kill_and_recover(&point, to);
                    swept += 1;
                }
                None => check(&format!("to {to}"), &self.node.apply(None, false)),
            }
            at = to;
        }
        swept
    }

    fn kill_and_recover(&self, fp: &str, to: &str) {
        let r = self.node.root();
        let point = format!("{fp} (to {to})");
        let killed = self.node.apply(Some(fp), false);
        assert!(
            killed.status.signal() == Some(9) || killed.status.code() == Some(128 + 9),
            "{point}: not killed there: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        check(
            &format!("{point}: the next apply"),
            &self.node.apply(None, false),
        );
        let temps: Vec<_> = watched(&self.node)
            .into_keys()
            .filter(|p| is_temp_file(p))
            .collect();
        assert_eq!(temps, Vec::<PathBuf>::new(), "{point}: temp files left");
        for j in ["intent.json", "k3s-journal.json"] {
            assert!(
                !r.join("var/lib/sightline").join(j).exists(),
                "{point}: {j} not settled"
            );
        }
        assert_eq!(
            outcome(&r),
            self.want[to],
            "{point}: differs from an uninterrupted apply"
        );
        self.node.settled(&point);
        let before = watched(&self.node);
        check(
            &format!("{point}: a further apply"),
            &self.node.apply(None, false),
        );
        assert_eq!(
            changed_paths(&before, &watched(&self.node)),
            Vec::<PathBuf>::new(),
            "{point}: a further apply wrote"
        );
    }
}

/// What a sweep did: the points of each direction, and how many were swept.
pub struct Swept {
    pub points: BTreeMap<&'static str, Vec<String>>,
    pub swept: usize,
    pub sweepers: usize,
}

/// Sweeps every rollout point with `SIGHTLINE_KILLPOINTS_JOBS` sweepers
/// (default `jobs`), each on the node and stand-in API `make` starts for
/// it. Every sweeper must have passed the same points, and together they
/// sweep each once.
pub fn sweep<N: Node>(jobs: usize, make: impl Fn() -> (N, KubeFake) + Sync) -> Swept {
    let jobs: usize = std::env::var("SIGHTLINE_KILLPOINTS_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .filter(|j| *j > 0)
        .unwrap_or(jobs);
    let make = &make;
    let results: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|i| {
                s.spawn(move || {
                    let (node, fake) = make();
                    let sweeper = Sweeper::new(node, fake);
                    let swept = sweeper.sweep(i, jobs);
                    (sweeper.points.clone(), swept)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let points = results[0].0.clone();
    for (p, _) in &results[1..] {
        assert_eq!(p, &points, "two sweepers passed different points");
    }
    let swept = results.iter().map(|(_, n)| n).sum();
    assert_eq!(swept, points.values().map(Vec::len).sum::<usize>());
    Swept {
        points,
        swept,
        sweepers: jobs,
    }
}

impl Swept {
    /// The line the sweep prints: how many points, each way, by how many.
    pub fn report(&self, harness: &str) -> String {
        format!(
            "kill-point sweep (rollout, {harness}): {} points swept ({} to full, {} to light) by {} sweepers",
            self.swept,
            self.points["full"].len(),
            self.points["light"].len(),
            self.sweepers
        )
    }
}
