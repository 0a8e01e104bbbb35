//! Clusters of several k3s servers: one Lease holder rolls out, every
//! server's stage files are byte-identical, one decision for the cluster,
//! version skew writes nothing, and agent nodes leave the manifests
//! directory alone. The servers are test roots running the real binary
//! against one stand-in API whose deploy controller applies every server's
//! manifests directory into one Addon store (tests/common/kubefake.rs).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kubefake::{KubeFake, node};
use common::*;
use serde_json::{Value, json};

const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests/sightline";

/// A server root: the pi4 fixture named `host`, optionally turned into a
/// 16 GB x86_64 machine with kernel BTF.
fn server(host: &str, big_x86: bool) -> tempfile::TempDir {
    let root = fixture("pi4");
    write(root.path(), "/etc/hostname", &format!("{host}\n"));
    if big_x86 {
        write(
            root.path(),
            "/proc/meminfo",
            "MemTotal:       16303412 kB\nMemFree:        14000000 kB\nMemAvailable:   15100000 kB\n",
        );
        write(root.path(), "/proc/sys/kernel/arch", "x86_64\n");
        write(root.path(), "/sys/kernel/btf/vmlinux", "BTF");
    }
    root
}

fn configure(root: &Path, fake: &KubeFake, lease_s: u64) {
    write(
        root,
        "/etc/sightline/config.toml",
        &format!(
            "[k3s]\napi_url = \"{}\"\napi_wait_seconds = 1\nlease_duration_seconds = {lease_s}\n[rollout]\naddon_timeout_seconds = 5\njob_timeout_seconds = 5\nworkloads_timeout_seconds = 3\nprune_timeout_seconds = 5\npoll_interval_ms = 100\n",
            fake.url
        ),
    );
}

fn cluster(hosts: &[(&str, bool)], lease_s: u64) -> (Vec<tempfile::TempDir>, KubeFake) {
    let roots: Vec<tempfile::TempDir> = hosts.iter().map(|(h, big)| server(h, *big)).collect();
    let paths: Vec<&Path> = roots.iter().map(|r| r.path()).collect();
    let fake = KubeFake::start_cluster(&paths);
    fake.with(|s| {
        s.nodes = hosts
            .iter()
            .map(|(h, big)| {
                if *big {
                    node(h, "amd64", "15922276Ki", true)
                } else {
                    node(h, "arm64", "3784504Ki", true)
                }
            })
            .collect()
    });
    for r in &roots {
        configure(r.path(), &fake, lease_s);
    }
    (roots, fake)
}

fn apply(root: &Path) -> (Option<i32>, String) {
    let out = sightline(root, &["apply", "--no-restart"]);
    (
        out.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn holder(fake: &KubeFake) -> Option<String> {
    fake.with(|s| {
        s.objects.get("leases/sightline").and_then(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .map(ToString::to_string)
        })
    })
}

/// A MicroTime field of the Lease's spec.
fn lease_time(fake: &KubeFake, field: &str) -> std::time::SystemTime {
    let t = fake.with(|s| s.objects["leases/sightline"]["spec"][field].clone());
    sightline::k3s::lease::parse_micro_time(t.as_str().unwrap()).unwrap()
}

fn configmap(fake: &KubeFake) -> Value {
    fake.with(|s| s.objects.get("configmaps/sightline-cluster").cloned())
        .expect("the cluster ConfigMap exists")
}

fn record(fake: &KubeFake) -> Value {
    serde_json::from_str(configmap(fake)["data"]["cluster.json"].as_str().unwrap()).unwrap()
}

/// The stage files of a server: name → (SHA-256, mode).
fn files(root: &Path) -> std::collections::BTreeMap<String, (String, u32)> {
    let dir = root.join(MANIFESTS);
    if !dir.exists() {
        return Default::default();
    }
    snapshot(&dir)
        .into_iter()
        .map(|(p, (data, mode))| {
            (
                p.to_string_lossy().into_owned(),
                (sightline::digest::sha256_hex(&data), mode),
            )
        })
        .collect()
}

/// A cluster decided by sightline `version` with bundle `digest`, whose
/// Lease `holder` last renewed (2 s lease) at `renewed`.
fn seed(fake: &KubeFake, version: &str, digest: &str, holder: &str, renewed: &str) {
    fake.with(|s| {
        s.objects.insert(
            "configmaps/sightline-cluster".into(),
            json!({"apiVersion":"v1","kind":"ConfigMap",
                "metadata":{"name":"sightline-cluster","namespace":"kube-system","resourceVersion":"5"},
                "data":{"sightlineVersion":version,"bundleDigest":digest,"tier":"light"}}),
        );
        s.objects.insert(
            "leases/sightline".into(),
            json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
                "metadata":{"name":"sightline","namespace":"kube-system","resourceVersion":"6"},
                "spec":{"holderIdentity":holder,"leaseDurationSeconds":2,"renewTime":renewed,"acquireTime":renewed,"leaseTransitions":0}}),
        );
    });
}

fn status_json(root: &Path) -> Value {
    serde_json::from_str(&ok(root, &["status", "--json"])).unwrap()
}

#[test]
fn three_servers_starting_at_once_elect_one_holder_and_write_identical_files() {
    let hosts = [("srv-a", false), ("srv-b", false), ("srv-c", false)];
    let (roots, fake) = cluster(&hosts, 30);
    // All three at once, as after a power cut: each reads "no Lease"
    // before any of them creates it.
    fake.with(|s| s.lease_barrier = 3);
    let children: Vec<_> = roots
        .iter()
        .map(|r| {
            Command::new(env!("CARGO_BIN_EXE_sightline"))
                .arg("--root")
                .arg(r.path())
                .args(["apply", "--no-restart"])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let h = holder(&fake).expect("someone holds the Lease");
    let idx = hosts.iter().position(|(n, _)| *n == h).unwrap();
    // Every other server lost the race or followed: exactly one rolled out.
    let rolled: Vec<usize> = outs
        .iter()
        .enumerate()
        .filter(|(_, o)| String::from_utf8_lossy(&o.stdout).contains("stage(s) healthy"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(rolled, vec![idx], "exactly the holder rolled out");
    let lease_creates = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("POST /apis/coordination.k8s.io"))
            .count()
    });
    assert_eq!(lease_creates, 3, "all three tried to create the Lease");
    assert_eq!(
        fake.with(|s| s.conflicts.get("leases/sightline").copied()),
        Some(2),
        "two lost the race with 409 AlreadyExists"
    );
    // The followers' next pass (the daemon's re-check) mirrors the holder.
    for (i, r) in roots.iter().enumerate() {
        if i != idx {
            let (code, log) = apply(r.path());
            assert_eq!(code, Some(0), "{log}");
            assert!(log.contains(&format!("{h} holds the Lease")), "{log}");
        }
    }
    let want = files(roots[idx].path());
    assert!(want.len() > 3, "{want:?}");
    for r in &roots {
        assert_eq!(files(r.path()), want, "byte-identical stage files");
        let st = status_json(r.path());
        assert_eq!(st["cluster_view"]["files_match"], json!(true), "{st}");
        assert_eq!(st["cluster_view"]["lease"]["holder"], json!(h), "{st}");
    }
    // One Grafana password for the cluster, kept 0600 on every server.
    let pw = |r: &Path| read(r, "/var/lib/sightline/secrets/grafana-admin-password");
    for r in &roots {
        assert_eq!(pw(r.path()), pw(roots[idx].path()));
        assert_eq!(
            mode(
                r.path(),
                "/var/lib/sightline/secrets/grafana-admin-password"
            ),
            0o600
        );
    }
    // The followers recorded their kernels on their Nodes, so the holder's
    // next pass may refine the decision (Falco's driver); one round later
    // every server is at rest: another round writes nothing.
    for round in 0..2 {
        for i in std::iter::once(idx).chain((0..roots.len()).filter(|i| *i != idx)) {
            let (code, log) = apply(roots[i].path());
            assert_eq!(code, Some(0), "round {round}: {log}");
        }
    }
    let want = files(roots[idx].path());
    for r in &roots {
        assert_eq!(files(r.path()), want);
    }
    let writes = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("PUT /api/v1/namespaces/kube-system/"))
            .count()
    });
    for r in &roots {
        let (code, log) = apply(r.path());
        assert_eq!(code, Some(0), "{log}");
        assert_eq!(files(r.path()), want);
    }
    assert_eq!(
        fake.with(|s| s
            .requests
            .iter()
            .filter(|r| r.starts_with("PUT /api/v1/namespaces/kube-system/"))
            .count()),
        writes,
        "a pass at rest rewrites no ConfigMap or Secret"
    );
    let flapping = fake.with(|s| s.flapping());
    assert!(flapping.is_empty(), "Addons flapping: {flapping:?}");
    let prom = read(
        roots[idx].path(),
        "/run/node_exporter/textfile_collector/sightline.prom",
    );
    assert!(prom.contains("sightline_cluster_lease_held 1"), "{prom}");
}

/// One GET against the stand-in (which drives its controllers), with the
/// client material of `root`.
fn poke(fake: &KubeFake, root: &Path) {
    let tls = root.join("var/lib/rancher/k3s/server/tls");
    let f = |n: &str| std::fs::read(tls.join(n)).unwrap();
    let api = sightline::k3s::K3sApi::new(
        &fake.url,
        &f("server-ca.crt"),
        &f("client-admin.crt"),
        &f("client-admin.key"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(api.readyz()).unwrap();
}

#[test]
fn differing_files_on_two_servers_flap_in_the_stand_in() {
    // The stand-in's own check: without coordination, two servers whose
    // files differ fight over one Addon, as on a real cluster.
    let (roots, fake) = cluster(&[("srv-a", false), ("srv-b", false)], 30);
    let file = format!("/{MANIFESTS}/sightline-10-namespaces.yaml");
    write(roots[0].path(), &file, "a: 1\n");
    write(roots[1].path(), &file, "b: 2\n");
    poke(&fake, roots[0].path());
    assert!(fake.with(|s| s.flapping()).is_empty());
    // Server a's file is written again (a restart, an edit): its controller
    // applies it over b's.
    std::thread::sleep(Duration::from_millis(20));
    write(roots[0].path(), &file, "a: 1\n");
    poke(&fake, roots[0].path());
    let flapping = fake.with(|s| s.flapping());
    assert_eq!(flapping, vec!["sightline-10-namespaces".to_string()]);
}

#[test]
fn when_the_holder_stops_renewing_another_takes_over_and_completes_the_rollout() {
    let lease_s = 2;
    let (roots, fake) = cluster(&[("srv-a", false), ("srv-b", false)], lease_s);
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(holder(&fake).as_deref(), Some("srv-a"));
    // srv-a is killed: it renews no more. srv-b polls.
    let renewed_at = lease_time(&fake, "renewTime");
    let pause = Duration::from_millis(500);
    let mut took_over = None;
    // One poll: the pause plus one pass of the follower (its host layer
    // and its Lease round), the longest seen.
    let mut poll = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let pass = Instant::now();
        let (code, log) = apply(roots[1].path());
        assert_eq!(code, Some(0), "{log}");
        if holder(&fake).as_deref() == Some("srv-b") {
            took_over = Some(log);
            break;
        }
        poll = poll.max(pass.elapsed() + pause);
        std::thread::sleep(pause);
    }
    let log = took_over.expect("srv-b took over");
    let at = lease_time(&fake, "acquireTime");
    let after = at.duration_since(renewed_at).unwrap();
    assert!(
        after <= Duration::from_secs(lease_s) + poll,
        "took over {after:?} after the last renewal (lease {lease_s} s, one poll {poll:?})"
    );
    assert!(
        after >= Duration::from_secs(lease_s),
        "took over before the Lease expired: {after:?}"
    );
    assert!(log.contains("stage(s) healthy"), "{log}");
    assert_eq!(files(roots[1].path()), files(roots[0].path()));
    let transitions =
        fake.with(|s| s.objects["leases/sightline"]["spec"]["leaseTransitions"].clone());
    assert_eq!(transitions, json!(1));
    // srv-a comes back: it follows srv-b.
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("srv-b holds the Lease"), "{log}");
}

#[test]
fn a_mixed_cluster_gets_one_decision_that_says_why() {
    let (roots, fake) = cluster(&[("pi", false), ("big", true)], 30);
    // The x86 server decides first, then the Pi follows (recording its
    // kernel facts on its Node), then the holder decides again.
    for r in [1, 0, 1, 0] {
        let (code, log) = apply(roots[r].path());
        assert_eq!(code, Some(0), "{log}");
    }
    assert_eq!(holder(&fake).as_deref(), Some("big"));
    let rec = record(&fake);
    let d = &rec["decision"];
    assert_eq!(d["tier"], json!("light"), "{d:#}");
    assert_eq!(d["runtime_security"], json!("falco"), "{d:#}");
    assert_eq!(d["falco_driver"], json!("auto"), "{d:#}");
    let reasons = d["reasons"].to_string();
    assert!(
        reasons.contains("the smallest, pi, has 3.6 GiB allocatable"),
        "{reasons}"
    );
    assert!(
        reasons.contains("BTF on: big; without: pi") && reasons.contains("driver.kind=auto"),
        "{reasons}"
    );
    assert!(reasons.contains("amd64 and arm64"), "{reasons}");
    let cm = configmap(&fake);
    assert_eq!(cm["data"]["tier"], json!("light"));
    // The rendered Falco chart takes the chart's automatic driver, and
    // both servers hold the same files.
    let falco = read(
        roots[1].path(),
        &format!("/{MANIFESTS}/sightline-50-falco.yaml"),
    );
    assert!(falco.contains("\"driver.kind\": \"auto\""), "{falco}");
    assert_eq!(files(roots[0].path()), files(roots[1].path()));
    let a = status_json(roots[0].path());
    let b = status_json(roots[1].path());
    assert_eq!(a["cluster_view"]["decision"], b["cluster_view"]["decision"]);
    let text = ok(roots[0].path(), &["status"]);
    assert!(
        text.contains("cluster decision: light tier, falco (auto driver)"),
        "{text}"
    );
    // `detect` on the Pi shows the cluster's decision, not its own (which
    // would pick the kernel module for its BTF-less kernel).
    let v = detect(roots[0].path());
    assert_eq!(v["view"], json!("cluster"), "{v:#}");
    assert_eq!(v["falco_driver"], json!("kmod"), "{v:#}");
    assert_eq!(
        v["cluster"]["decision"]["falco_driver"],
        json!("auto"),
        "{v:#}"
    );
    let text = ok(roots[0].path(), &["detect"]);
    assert!(
        text.contains("decisions (cluster)") && text.contains("lease holder      big"),
        "{text}"
    );
    // Without the API, the local view, and it says why.
    fake.with(|s| s.down = true);
    let v = detect(roots[0].path());
    assert_eq!(v["view"], json!("local"), "{v:#}");
    assert!(v["cluster_unavailable"].is_string(), "{v:#}");
}

#[test]
fn a_server_with_an_older_bundle_writes_nothing_and_says_so() {
    let (roots, fake) = cluster(&[("old", false)], 2);
    let newer_digest = "f".repeat(64);
    // The upgraded holder's Lease has even expired: the old server still
    // must not take it and move the cluster back.
    seed(
        &fake,
        "99.0.0",
        &newer_digest,
        "new",
        "2020-01-01T00:00:00.000000Z",
    );
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("from sightline 99.0.0; this node has")
            && log.contains("waiting for the upgrade"),
        "{log}"
    );
    assert!(files(roots[0].path()).is_empty(), "no stage file written");
    assert_eq!(holder(&fake).as_deref(), Some("new"));
    // The host layer still converged.
    assert!(
        roots[0]
            .path()
            .join("etc/rancher/k3s/audit-policy.yaml")
            .exists()
            || log.contains("audit"),
        "{log}"
    );
    let st = status_json(roots[0].path());
    assert_eq!(st["cluster_view"]["role"], json!("skewed"), "{st}");
    let text = ok(roots[0].path(), &["status"]);
    assert!(text.contains("waiting for the upgrade"), "{text}");
    let prom = read(
        roots[0].path(),
        "/run/node_exporter/textfile_collector/sightline.prom",
    );
    assert!(prom.contains("sightline_cluster_version_skew 1"), "{prom}");
    // The ConfigMap is untouched.
    assert_eq!(
        configmap(&fake)["data"]["sightlineVersion"],
        json!("99.0.0")
    );
}

#[test]
fn an_agent_node_never_touches_the_manifests_directory() {
    let (roots, fake) = cluster(&[("srv-a", false)], 30);
    let agent = fixture("agent");
    write(agent.path(), "/etc/hostname", "worker\n");
    configure(agent.path(), &fake, 30);
    let before = fake.with(|s| s.requests.len());
    let (code, log) = apply(agent.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(!agent.path().join(MANIFESTS).exists(), "{log}");
    assert_eq!(
        fake.with(|s| s.requests.len()),
        before,
        "the agent asked the API nothing"
    );
    let st = status_json(agent.path());
    assert_eq!(st["cluster_view"]["role"], json!("agent"), "{st}");
    drop(roots);
}

#[test]
fn a_single_server_holds_the_lease_and_at_rest_writes_only_its_renewal() {
    let (roots, fake) = cluster(&[("solo", false)], 30);
    // k3s names the node from its config's node-name, not the hostname.
    write(roots[0].path(), "/etc/hostname", "raspberrypi\n");
    write(
        roots[0].path(),
        "/etc/rancher/k3s/config.yaml",
        "node-name: Solo\n",
    );
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stage(s) healthy"), "{log}");
    assert_eq!(holder(&fake).as_deref(), Some("solo"));
    let rec = record(&fake);
    assert_eq!(rec["decided_by"], json!("solo"));
    assert_eq!(
        detect(roots[0].path())["k3s"]["node_name"],
        json!({"name": "solo", "source": {"from": "config_file", "file": "/etc/rancher/k3s/config.yaml"}})
    );
    // Decided as a single machine decides: its own memory.
    assert!(
        rec["decision"]["reasons"]["tier"][0]
            .as_str()
            .unwrap()
            .contains(" available"),
        "{rec:#}"
    );
    let coordination = |r: &String| {
        ["/leases", "/configmaps", "/secrets", "/nodes"]
            .iter()
            .any(|k| r.contains(k))
    };
    fake.with(|s| s.requests.clear());
    // Free memory moves between passes; the kept tier does not, and the
    // reason quoting the new measure is no cause to rewrite the ConfigMap.
    write(
        roots[0].path(),
        "/proc/meminfo",
        "MemTotal:        3884504 kB\nMemFree:         3000000 kB\nMemAvailable:   12000000 kB\n",
    );
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    let reqs: Vec<String> = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| coordination(r))
            .cloned()
            .collect()
    });
    let writes: Vec<&String> = reqs.iter().filter(|r| !r.starts_with('/')).collect();
    // A slow machine's rollout may outlast a third of the Lease: the
    // renewals during it are renewals too.
    assert!(
        !writes.is_empty()
            && writes.iter().all(|w| *w
                == "PUT /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sightline"),
        "{reqs:#?}"
    );
    // The Lease is renewed from the copy kept on tmpfs, without reading it.
    assert!(
        !reqs
            .iter()
            .any(|r| r.ends_with("/leases/sightline") && r.starts_with('/')),
        "{reqs:#?}"
    );
    eprintln!("coordination requests of a single server at rest: {reqs:#?}");
    assert!(reqs.len() <= 5, "{reqs:#?}");
}

#[test]
fn the_holder_renews_during_its_rollout_and_stops_it_when_the_lease_is_gone() {
    let (roots, fake) = cluster(&[("srv-a", false)], 2);
    // A long rollout: Loki never gets ready (20 s gate).
    write(
        roots[0].path(),
        "/etc/sightline/config.toml",
        &read(roots[0].path(), "/etc/sightline/config.toml").replace(
            "workloads_timeout_seconds = 3",
            "workloads_timeout_seconds = 20",
        ),
    );
    fake.with(|s| {
        s.unready
            .insert("statefulset/logging/loki".into(), "ImagePullBackOff".into())
    });
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("--root")
        .arg(roots[0].path())
        .args(["apply", "--no-restart"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let loki = roots[0]
        .path()
        .join(MANIFESTS)
        .join("sightline-20-loki.yaml");
    while !loki.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(loki.exists(), "the rollout reached loki");
    let renew = || fake.with(|s| s.objects["leases/sightline"]["spec"]["renewTime"].clone());
    let first = renew();
    // Longer than the lease: the holder must have renewed meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    assert_ne!(renew(), first, "renewed during the rollout");
    assert_eq!(holder(&fake).as_deref(), Some("srv-a"));
    // An operator (or a server with a skewed clock) takes the Lease.
    fake.with(|s| {
        let l = s.objects.get_mut("leases/sightline").unwrap();
        l["spec"]["holderIdentity"] = json!("intruder");
        l["spec"]["renewTime"] = json!(sightline::k3s::lease::micro_time(
            std::time::SystemTime::now() + Duration::from_secs(60)
        ));
        l["metadata"]["resourceVersion"] = json!("999999");
    });
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("rollout stopped: the Lease passed to intruder"),
        "{log}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped at the loss, not at the gate's timeout: {:?}",
        started.elapsed()
    );
    let after_loki = files(roots[0].path())
        .into_keys()
        .filter(|f| f.as_str() > "sightline-20-loki.yaml")
        .count();
    assert_eq!(after_loki, 0, "nothing written after the Lease was lost");
}

#[test]
fn an_upgraded_server_waits_for_the_holder_then_moves_the_cluster_when_it_holds_the_lease() {
    let (roots, fake) = cluster(&[("upgraded", false)], 2);
    let older_digest = "0".repeat(64);
    let now = sightline::k3s::lease::micro_time(std::time::SystemTime::now());
    seed(&fake, "0.0.1", &older_digest, "old", &now);
    // The old holder is alive: this newer server waits and writes nothing.
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("from sightline 0.0.1; this node has")
            && log.contains("the cluster moves to it when the Lease holder runs this release"),
        "{log}"
    );
    assert!(files(roots[0].path()).is_empty());
    // The old holder is upgraded away (stops renewing): this server takes
    // the Lease and moves the cluster to its bundle.
    std::thread::sleep(Duration::from_millis(2200));
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stage(s) healthy"), "{log}");
    assert_eq!(holder(&fake).as_deref(), Some("upgraded"));
    let cm = configmap(&fake);
    assert_eq!(
        cm["data"]["sightlineVersion"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    assert_ne!(cm["data"]["bundleDigest"], json!(older_digest));
    assert!(!files(roots[0].path()).is_empty());
}

#[test]
fn a_stage_emptied_for_pruning_is_placed_on_every_server() {
    let (roots, fake) = cluster(&[("srv-a", false), ("srv-b", false)], 30);
    let set_tier = |tier: &str| {
        let cfg = read(roots[0].path(), "/etc/sightline/config.toml");
        let cfg = cfg
            .lines()
            .filter(|l| !l.starts_with("tier ="))
            .collect::<Vec<_>>()
            .join("\n");
        write(
            roots[0].path(),
            "/etc/sightline/config.toml",
            &format!("tier = \"{tier}\"\n{cfg}\n"),
        );
    };
    set_tier("full");
    // Room for the full tier: a 4 GB node would refuse it.
    for r in [0, 1] {
        eight_gb(roots[r].path());
    }
    for r in [0, 1] {
        let (code, log) = apply(roots[r].path());
        assert_eq!(code, Some(0), "{log}");
    }
    assert_eq!(files(roots[0].path()), files(roots[1].path()));
    // The holder switches to light; k3s never finishes deleting the full
    // tier's charts, so the emptied stage file stays in place.
    set_tier("light");
    fake.with(|s| s.delete_polls = u32::MAX);
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(1), "{log}");
    let emptied: Vec<String> = files(roots[0].path())
        .into_keys()
        .filter(|f| {
            read(roots[0].path(), &format!("/{MANIFESTS}/{f}")).contains("was removed by sightline")
        })
        .collect();
    assert!(!emptied.is_empty(), "{log}");
    let (code, log) = apply(roots[1].path());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(files(roots[1].path()), files(roots[0].path()), "{log}");
    let st = status_json(roots[1].path());
    assert_eq!(st["cluster_view"]["files_match"], json!(true), "{st}");
    assert!(fake.with(|s| s.flapping()).is_empty());
}

/// The coordination requests of a pass, how many round trips it waited for
/// one after the other, and how long they were in flight.
fn coordination_wait(fake: &KubeFake) -> (usize, Duration, Vec<String>) {
    fake.with(|s| {
        (
            common::kubefake::round_trips(&s.coordination_timings),
            common::kubefake::in_flight(&s.coordination_timings),
            s.coordination_timings
                .iter()
                .map(|(r, _, _)| r.clone())
                .collect(),
        )
    })
}

#[test]
fn a_holder_at_rest_waits_for_about_one_round_trip() {
    // A long Lease: no renewal falls inside the rollout's gates.
    let (roots, fake) = cluster(&[("solo", false)], 300);
    for _ in 0..2 {
        let (code, log) = apply(roots[0].path());
        assert_eq!(code, Some(0), "{log}");
    }
    let copy = read(roots[0].path(), "/run/sightline/cluster-lease.json");
    assert!(copy.contains("\"holderIdentity\":\"solo\""), "{copy}");
    // Long enough that this single-threaded stand-in has read every
    // request sent at once before it answers the first.
    let latency = Duration::from_millis(1000);
    fake.with(|s| {
        s.coordination_latency = latency;
        s.coordination_timings.clear();
    });
    let (code, log) = apply(roots[0].path());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stage(s) healthy"), "{log}");
    let (trips, waited, reqs) = coordination_wait(&fake);
    // Measured: the 4 requests (the Lease PUT, the nodes, the ConfigMap
    // and the Secret) go out at once: one round trip, 1.0-1.3 s in flight
    // at 1 s per request (up to 1.7 s on a loaded machine: new TLS
    // connections, and this stand-in reads them one at a time). Before,
    // 5 requests one after the other: 5 round trips, 5 s.
    eprintln!(
        "a holder's `apply` at rest: {trips} round trip(s), {waited:?} in flight, for {reqs:#?}"
    );
    assert_eq!(trips, 1, "{reqs:#?}");
    // In flight longer than one latency only by the debug build's TLS
    // handshakes and this stand-in's serial reading; 4 in a row is 4 s.
    assert!(waited >= latency && waited < latency * 3, "{waited:?}");
    assert!(
        !reqs
            .iter()
            .any(|r| r.starts_with('/') && r.ends_with("/leases/sightline")),
        "renewed without reading the Lease: {reqs:#?}"
    );
}

/// Runs one cluster pass in this process, as the daemon does.
fn daemon_pass(
    root: &Path,
    memory: &sightline::agent::coordination::Memory,
) -> sightline::agent::ClusterOutcome {
    let root = sightline::sysroot::Sysroot::new(root);
    let ctx = sightline::agent::Ctx {
        root: root.clone(),
        system_bus: None,
    };
    let cfg = sightline::config::load(&root).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(sightline::agent::run_cluster(
        &ctx,
        &cfg,
        sightline::rollout::Progress::Log,
        false,
        memory,
    ))
    .unwrap()
}

fn held_here(o: &sightline::agent::ClusterOutcome) -> bool {
    o.view()
        .and_then(|v| v.lease.as_ref())
        .is_some_and(|l| l.held_here)
}

#[test]
fn the_daemon_renews_with_one_put_while_it_reads_the_nodes_and_falls_back_on_a_conflict() {
    let (roots, fake) = cluster(&[("solo", false)], 300);
    let memory = sightline::agent::coordination::Memory::in_process();
    assert!(held_here(&daemon_pass(roots[0].path(), &memory)));
    // Long enough that this single-threaded stand-in has read every
    // request sent at once before it answers the first.
    let latency = Duration::from_millis(1000);
    fake.with(|s| {
        s.coordination_latency = latency;
        s.coordination_timings.clear();
    });
    assert!(held_here(&daemon_pass(roots[0].path(), &memory)));
    let (trips, waited, mut reqs) = coordination_wait(&fake);
    reqs.sort();
    assert_eq!(trips, 1, "{reqs:#?}");
    // The ConfigMap and the Secret are remembered: not read again.
    assert_eq!(
        reqs,
        vec![
            "/api/v1/nodes".to_string(),
            "PUT /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sightline".into(),
        ]
    );
    assert!(waited < latency * 3, "waited {waited:?}");
    // Someone wrote the Lease meanwhile (still naming this node): the PUT
    // gets 409, the pass reads the Lease and the ConfigMap and renews.
    fake.with(|s| {
        let l = s.objects.get_mut("leases/sightline").unwrap();
        l["metadata"]["resourceVersion"] = json!("999999");
        s.coordination_timings.clear();
    });
    let o = daemon_pass(roots[0].path(), &memory);
    assert!(held_here(&o), "{}", o.line());
    let (trips, _, reqs) = coordination_wait(&fake);
    // The 409'd PUT, the reads, the renewal.
    assert_eq!(trips, 3, "{reqs:#?}");
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sightline";
    let puts = reqs
        .iter()
        .filter(|r| **r == format!("PUT {lease}"))
        .count();
    assert_eq!(puts, 2, "{reqs:#?}");
    assert!(reqs.iter().any(|r| r == lease), "{reqs:#?}");
    assert_eq!(
        fake.with(|s| s.conflicts.get("leases/sightline").copied()),
        Some(1)
    );
}

/// Sets `tier = ...` at the top of a server's config.
/// An 8 GB machine with most of it free: a full-tier candidate.
fn eight_gb(root: &Path) {
    write(
        root,
        "/proc/meminfo",
        "MemTotal:        7998000 kB\nMemFree:         5000000 kB\nMemAvailable:    7100000 kB\n",
    );
}

fn set_tier(root: &Path, tier: &str) {
    let cfg = read(root, "/etc/sightline/config.toml");
    let cfg = cfg
        .lines()
        .filter(|l| !l.starts_with("tier ="))
        .collect::<Vec<_>>()
        .join("\n");
    write(
        root,
        "/etc/sightline/config.toml",
        &format!("tier = \"{tier}\"\n{cfg}\n"),
    );
}

#[test]
fn a_promoted_follower_prunes_the_stages_the_old_holder_recorded() {
    let lease_s = 2;
    let (roots, fake) = cluster(&[("srv-a", false), ("srv-b", false)], lease_s);
    for r in &roots {
        set_tier(r.path(), "full");
        eight_gb(r.path());
    }
    for r in &roots {
        let (code, log) = apply(r.path());
        assert_eq!(code, Some(0), "{log}");
    }
    assert_eq!(holder(&fake).as_deref(), Some("srv-a"));
    let full = files(roots[1].path());
    assert_eq!(full, files(roots[0].path()));
    let recorded = record(&fake)["stages"].clone();
    // srv-a is gone, disk and all; srv-b's operator moves to the light tier.
    std::fs::remove_dir_all(roots[0].path().join(MANIFESTS)).unwrap();
    set_tier(roots[1].path(), "light");
    std::thread::sleep(Duration::from_millis(lease_s * 1000 + 300));
    let (code, log) = apply(roots[1].path());
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(holder(&fake).as_deref(), Some("srv-b"), "{log}");
    assert!(log.contains("stage(s) healthy"), "{log}");
    let light = files(roots[1].path());
    let gone: Vec<&String> = full.keys().filter(|f| !light.contains_key(*f)).collect();
    assert!(
        !gone.is_empty(),
        "the light tier has fewer stages: {light:?}"
    );
    let live = fake.live_objects();
    let stages = recorded.as_object().expect("the record lists the stages");
    let after = record(&fake)["stages"].clone();
    // An object the light tier has too (a shared dashboard) stays.
    let kept: Vec<&Value> = after
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["objects"].as_array().unwrap())
        .collect();
    let mut pruned = 0;
    for (name, s) in stages {
        if !gone.iter().any(|f| **f == s["file"]) {
            continue;
        }
        pruned += 1;
        for o in s["objects"].as_array().unwrap() {
            if kept.contains(&o) {
                continue;
            }
            assert!(
                !live.contains(o.as_str().unwrap()),
                "{name}: {o} still exists\n{log}"
            );
        }
        assert!(after.get(name).is_none(), "{name} still recorded");
    }
    assert_eq!(pruned, gone.len(), "{recorded:#}");
}

#[test]
fn plan_and_render_on_a_follower_show_the_cluster_decision_and_say_when_it_is_unavailable() {
    let (roots, fake) = cluster(&[("srv-a", false), ("srv-b", false)], 30);
    // srv-b alone would pick the full tier (8 GB, forced); the holder
    // decides light for the cluster.
    set_tier(roots[1].path(), "full");
    eight_gb(roots[1].path());
    for r in &roots {
        let (code, log) = apply(r.path());
        assert_eq!(code, Some(0), "{log}");
    }
    assert_eq!(holder(&fake).as_deref(), Some("srv-a"));
    let theirs = files(roots[0].path());
    assert_eq!(files(roots[1].path()), theirs);
    let plan: Value = serde_json::from_str(&ok(roots[1].path(), &["plan", "-o", "json"])).unwrap();
    assert_eq!(plan["cluster_source"], json!("cluster"), "{plan:#}");
    assert!(plan.get("cluster_unavailable").is_none(), "{plan:#}");
    let stages = plan["cluster"].as_array().unwrap();
    for s in stages {
        assert_eq!(s["action"], json!("unchanged"), "{plan:#}");
        assert!(theirs.contains_key(s["file"].as_str().unwrap()), "{s}");
    }
    assert_eq!(stages.len(), theirs.len(), "{plan:#}");
    let text = ok(roots[1].path(), &["plan"]);
    assert!(
        text.contains("cluster decision: the one srv-a stored in ConfigMap kube-system/sightline-cluster (srv-a holds the Lease)"),
        "{text}"
    );
    let render: Value =
        serde_json::from_str(&ok(roots[1].path(), &["render", "-o", "json"])).unwrap();
    assert_eq!(render["cluster_source"], json!("cluster"));
    for s in render["stages"].as_array().unwrap() {
        let file = s["file"].as_str().unwrap();
        let sha = sightline::digest::sha256_hex(s["content"].as_str().unwrap().as_bytes());
        assert_eq!(theirs.get(file).map(|(h, _)| h), Some(&sha), "{file}");
    }
    // Without the API: this machine's own decision (the full tier), and it
    // says why.
    fake.with(|s| s.down = true);
    let plan: Value = serde_json::from_str(&ok(roots[1].path(), &["plan", "-o", "json"])).unwrap();
    assert_eq!(plan["cluster_source"], json!("local"), "{plan:#}");
    assert!(plan["cluster_unavailable"].is_string(), "{plan:#}");
    assert!(
        plan["cluster"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["file"] == json!("sightline-40-kube-prometheus-stack.yaml")),
        "{plan:#}"
    );
    let text = ok(roots[1].path(), &["plan"]);
    assert!(text.contains("cluster decision unavailable ("), "{text}");
}
