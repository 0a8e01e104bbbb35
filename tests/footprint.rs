//! The stack's memory footprint, computed from the rendered bundle, and what
//! sightline decides with it.

mod common;

use common::*;

/// The light tier's budget for steady memory requests: the seed's peak.
const LIGHT_BUDGET: u64 = 1_288_490_189; // 1.2 GiB, rounded up

fn tier_figure(d: &serde_json::Value, tier: &str, key: &str) -> u64 {
    d["stack"]["tiers"][tier][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no stack.tiers.{tier}.{key} in detect --json: {d}"))
}

#[test]
fn light_tier_steady_requests_stay_within_the_pi_budget() {
    let root = fixture("pi4");
    let d = detect(root.path());
    let steady = tier_figure(&d, "light", "steady_requests_bytes");
    assert!(
        steady <= LIGHT_BUDGET,
        "light tier requests {} MiB steady, over the 1.2 GiB budget: lower a request in files/bundle/values/*.light.yaml (see docs/stack.md)",
        steady >> 20
    );
    // The figure is a sum over real containers, not a constant: the full
    // tier is several times larger, and Jobs are counted apart.
    assert!(tier_figure(&d, "full", "steady_requests_bytes") > 2 * steady);
    assert!(tier_figure(&d, "light", "job_requests_bytes") > 0);
    assert_eq!(d["stack"]["fit"]["value"]["fit"], "fits", "{d}");
}

#[test]
fn a_2gb_pi_gets_the_documented_smaller_set() {
    let root = fixture("pi4-2gb");
    let d = detect(root.path());
    assert_eq!(d["tier"], "light");
    assert_eq!(
        d["stack"]["fit"]["value"],
        serde_json::json!({"fit": "reduced", "omitted": ["trivy-operator", "uptime-kuma"]}),
        "{d}"
    );
    assert!(
        d["warnings"]
            .to_string()
            .contains("without trivy-operator and uptime-kuma"),
        "{d}"
    );
    let out = tempfile::tempdir().unwrap();
    ok(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for gone in [
        "sightline-60-trivy-operator.yaml",
        "sightline-95-uptime-kuma.yaml",
    ] {
        assert!(!names.contains(&gone.to_string()), "{gone} in {names:?}");
    }
    for kept in [
        "sightline-20-loki.yaml",
        "sightline-40-victoria-metrics.yaml",
        "sightline-50-falco.yaml",
        "sightline-91-loki-rules.yaml",
    ] {
        assert!(
            names.contains(&kept.to_string()),
            "{kept} missing: {names:?}"
        );
    }
}

#[test]
fn a_node_too_small_even_for_the_smaller_set_is_refused_with_the_numbers() {
    let root = fixture("pi4-2gb");
    write(
        root.path(),
        "/proc/meminfo",
        "MemTotal:        1400000 kB\nMemFree:          300000 kB\nMemAvailable:    1100000 kB\n",
    );
    let out = tempfile::tempdir().unwrap();
    let r = sightline(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(
        err.contains("cluster stages refused") && err.contains("1368 MiB"),
        "the refusal names the node's memory: {err}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn a_user_values_overlay_that_outgrows_the_node_is_caught_before_rollout() {
    // The decision reads the rendered values, user overlay included.
    let root = fixture("pi4");
    write(
        root.path(),
        "/etc/sightline/values.d/loki.yaml",
        "singleBinary:\n  resources:\n    requests:\n      memory: 3Gi\n",
    );
    let out = tempfile::tempdir().unwrap();
    let r = sightline(
        root.path(),
        &["render", "--out", out.path().to_str().unwrap()],
    );
    assert!(
        !r.status.success(),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("refused"));
}

/// The README's footprint table is generated from the same figures.
#[test]
fn readme_footprint_table_matches_the_bundle() {
    let d = detect(fixture("pi4").path());
    let mut table = String::from(
        "| tier | steady requests | steady limits | Jobs (at once) | largest init container |\n|---|---|---|---|---|\n",
    );
    for tier in ["full", "light"] {
        let m = |k: &str| format!("{} MiB", tier_figure(&d, tier, k).div_ceil(1 << 20));
        table.push_str(&format!(
            "| {tier} | {} | {} | {} | {} |\n",
            m("steady_requests_bytes"),
            m("steady_limits_bytes"),
            m("job_requests_bytes"),
            m("init_peak_bytes"),
        ));
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md's footprint table is out of date; replace it with:\n{table}"
    );
}

/// `plan` on a node too small even for the reduced stack shows the refusal
/// with its numbers under the cluster stages, beside the host plan, rather
/// than failing as a whole.
#[test]
fn plan_shows_a_refused_stack_under_the_cluster_stages() {
    let root = fixture("pi4");
    write(
        root.path(),
        "/proc/meminfo",
        "MemTotal:        1000000 kB\nMemFree:          500000 kB\nMemAvailable:     700000 kB\n",
    );
    let out = ok(root.path(), &["plan"]);
    let cluster = out.split("cluster stages:").nth(1).unwrap_or_default();
    assert!(
        cluster.contains("skipped: cluster stages refused") && cluster.contains("977 MiB"),
        "{out}"
    );
    assert!(
        out.contains("audit-policy.yaml"),
        "the host plan is shown too: {out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(root.path(), &["plan", "--json"])).unwrap();
    assert_eq!(json["cluster"][0]["action"], "skipped");
    assert!(
        json["cluster"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("refused")
    );
}
