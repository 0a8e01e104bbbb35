//! k3s found wherever it is installed and its configuration read as k3s
//! reads it: the Flatcar sysext-bakery layout, `INSTALL_K3S_NAME` units,
//! `K3S_CONFIG_FILE`, `<config>.d` drop-ins in any case, command-line
//! apiserver flags, `--disable` and `.skip`.

mod common;

use common::*;
use serde_json::Value;
use sightline::agent::LiveOps;
use sightline::config::LoadedConfig;
use sightline::effects::Effect;
use sightline::engine::ConvergeOptions;
use sightline::facts::{ConfigSource, Facts, K3sRole};
use sightline::host::DesiredState;
use sightline::state::State;
use sightline::sysroot::Sysroot;

const DEFAULT_DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/60-sightline-audit.yaml";
const BAKERY_UNIT: &str = "/usr/local/lib/systemd/system/k3s.service";
const WANTS: &str = "etc/systemd/system/multi-user.target.wants";

fn load(root: &std::path::Path) -> (Sysroot, LoadedConfig, Facts) {
    let sys = Sysroot::new(root);
    let cfg = sightline::config::load(&sys).unwrap();
    let facts = Facts::detect(&sys);
    (sys, cfg, facts)
}

fn desired(sys: &Sysroot, cfg: &LoadedConfig, facts: &Facts) -> DesiredState {
    DesiredState::compute(sys, &cfg.config, facts).unwrap()
}

fn exists(root: &std::path::Path, host: &str) -> bool {
    root.join(host.trim_start_matches('/')).exists()
}

#[test]
fn flatcar_bakery_server_is_found_in_usr_local_lib() {
    let root = fixture("flatcar-bakery");
    let d = detect(root.path());
    let k = &d["k3s"];
    assert_eq!(k["role"], "server", "{k:#}");
    assert_eq!(k["role_from"], "subcommand");
    assert_eq!(k["unit"], "k3s.service");
    assert_eq!(k["unit_file"], BAKERY_UNIT);
    assert_eq!(k["unit_from"], "files");
    assert_eq!(
        k["exec_start"],
        serde_json::json!(["/usr/local/bin/k3s", "server"])
    );
    assert_eq!(k["config"]["file"], "/etc/rancher/k3s/config.yaml");
    assert_eq!(k["config"]["source"]["kind"], "default");
    assert_eq!(k["config"]["exists"], true);
    assert_eq!(s(&d["os"]["id"]), "flatcar");
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn flatcar_bakery_agent_is_the_unit_the_wants_link_enables() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    std::fs::remove_file(r.join(WANTS).join("k3s.service")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/local/lib/systemd/system/k3s-agent.service",
        r.join(WANTS).join("k3s-agent.service"),
    )
    .unwrap();
    let d = detect(r);
    assert_eq!(d["k3s"]["role"], "agent", "{:#}", d["k3s"]);
    assert_eq!(d["k3s"]["unit"], "k3s-agent.service");
    let plan: Value = serde_json::from_str(&ok(r, &["plan", "--json", "--host-only"])).unwrap();
    assert!(
        plan["host"]["skipped"].to_string().contains("agent node"),
        "{plan:#}"
    );
}

#[test]
fn flatcar_bakery_apply_writes_the_audit_files_once() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    let out = ok(r, &["apply", "--no-restart", "--host-only"]);
    assert!(!out.contains("unit file found"), "{out}");
    assert!(exists(r, DEFAULT_DROPIN), "{out}");
    assert!(exists(r, "/etc/rancher/k3s/audit-policy.yaml"));
    assert_eq!(mode(r, DEFAULT_DROPIN), 0o600);
    assert!(read(r, DEFAULT_DROPIN).contains("kube-apiserver-arg+:"));
    let again = ok(r, &["apply", "--no-restart", "--host-only"]);
    assert!(again.contains("nothing changed"), "{again}");
}

#[tokio::test]
async fn k3s_config_file_from_the_unit_environment_moves_the_dropin() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    // The bakery unit reads EnvironmentFile=-/etc/default/%N.
    write(
        r,
        "/etc/default/k3s",
        "K3S_CONFIG_FILE=\"/etc/k3s/cluster.yaml\"\n",
    );
    write(
        r,
        "/etc/k3s/cluster.yaml",
        "write-kubeconfig-mode: \"0600\"\n",
    );
    let (sys, mut cfg, facts) = load(r);
    assert_eq!(facts.k3s.config.file, "/etc/k3s/cluster.yaml");
    assert_eq!(
        facts.k3s.config.source,
        ConfigSource::Environment {
            set_in: "EnvironmentFile /etc/default/k3s".into()
        }
    );
    // Unfollowed, the default drop-in is somewhere k3s never reads.
    let w = desired(&sys, &cfg, &facts).warnings.join("\n");
    assert!(
        w.contains("k3s reads drop-ins from /etc/k3s/cluster.yaml.d"),
        "{w}"
    );

    cfg.follow_k3s(&facts.k3s);
    let followed = "/etc/k3s/cluster.yaml.d/60-sightline-audit.yaml";
    assert_eq!(cfg.config.paths.k3s_audit_dropin, followed);
    let d = desired(&sys, &cfg, &facts);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let mut state = State::load(&sys, &cfg.config).unwrap();
    let opts = ConvergeOptions {
        no_restart: true,
        explicit: true,
        ..Default::default()
    };
    sightline::engine::converge::<LiveOps>(&sys, &cfg, &facts, &mut state, None, opts)
        .await
        .unwrap();
    assert!(exists(r, followed));
    assert!(!exists(r, DEFAULT_DROPIN));
}

#[test]
fn a_remote_k3s_config_is_not_followed_and_is_warned_about() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    write(
        r,
        "/etc/default/k3s",
        "K3S_CONFIG_FILE=https://cfg.lan/k3s.yaml\n",
    );
    let (sys, mut cfg, facts) = load(r);
    cfg.follow_k3s(&facts.k3s);
    assert_eq!(cfg.config.paths.k3s_audit_dropin, DEFAULT_DROPIN);
    let w = desired(&sys, &cfg, &facts).warnings.join("\n");
    assert!(
        w.contains("k3s reads its config from https://cfg.lan/k3s.yaml (K3S_CONFIG_FILE from EnvironmentFile /etc/default/k3s)"),
        "{w}"
    );
}

#[test]
fn an_explicit_dropin_setting_stays_authoritative() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    write(
        r,
        "/etc/systemd/system/k3s.service.d/10-config.conf",
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server --config=/etc/k3s/cluster.yaml\n",
    );
    write(
        r,
        "/etc/sightline/config.toml",
        &format!("[paths]\nk3s_audit_dropin = \"{DEFAULT_DROPIN}\"\n"),
    );
    let (sys, mut cfg, facts) = load(r);
    assert_eq!(facts.k3s.config.file, "/etc/k3s/cluster.yaml");
    cfg.follow_k3s(&facts.k3s);
    assert_eq!(cfg.config.paths.k3s_audit_dropin, DEFAULT_DROPIN);
    let w = desired(&sys, &cfg, &facts).warnings.join("\n");
    assert!(
        w.contains("--config=/etc/k3s/cluster.yaml on the k3s command line"),
        "{w}"
    );
}

#[test]
fn a_later_yml_dropin_in_any_case_is_checked() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    write(
        r,
        "/etc/rancher/k3s/config.yaml.d/90-user.YML",
        "kube-apiserver-arg:\n  - anonymous-auth=false\n",
    );
    let (sys, cfg, facts) = load(r);
    assert!(
        facts
            .k3s
            .config
            .dropins
            .contains(&"/etc/rancher/k3s/config.yaml.d/90-user.YML".to_string())
    );
    let w = desired(&sys, &cfg, &facts).warnings.join("\n");
    assert!(
        w.contains("90-user.YML sets plain \"kube-apiserver-arg\""),
        "{w}"
    );
}

#[test]
fn a_k3s_config_file_k3s_cannot_parse_is_named() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    write(
        r,
        "/etc/rancher/k3s/config.yaml.d/10-broken.yml",
        "disable: [\n",
    );
    let (sys, cfg, facts) = load(r);
    let w = desired(&sys, &cfg, &facts).warnings.join("\n");
    assert!(
        w.contains("/etc/rancher/k3s/config.yaml.d/10-broken.yml: ")
            && w.contains("k3s will not start until this file is valid YAML"),
        "{w}"
    );
}

#[test]
fn command_line_apiserver_args_append_and_only_audit_ones_conflict() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    let dropin = "/etc/systemd/system/k3s.service.d/10-args.conf";
    write(
        r,
        dropin,
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server \\\n  '--kube-apiserver-arg=anonymous-auth=false'\n",
    );
    let (sys, cfg, facts) = load(r);
    assert_eq!(facts.k3s.cli_apiserver_args, vec!["anonymous-auth=false"]);
    let w = desired(&sys, &cfg, &facts).warnings;
    assert!(
        w.is_empty(),
        "non-audit flags are appended, not a conflict: {w:?}"
    );

    write(
        r,
        dropin,
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server --kube-apiserver-arg \"audit-log-maxage=1\"\n",
    );
    let (sys, cfg, facts) = load(r);
    let w = desired(&sys, &cfg, &facts).warnings.join("\n");
    assert!(
        w.contains("audit-log-maxage=1")
            && w.contains("appends them after the config files' values"),
        "{w}"
    );
}

#[test]
fn a_named_install_is_found_and_restarted_by_its_name() {
    let root = fixture("nok3s");
    let r = root.path();
    // install.sh with INSTALL_K3S_NAME=prod writes k3s-prod.service.
    write(
        r,
        "/etc/systemd/system/k3s-prod.service",
        "[Service]\nType=notify\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\n",
    );
    let (sys, mut cfg, facts) = load(r);
    assert_eq!(facts.k3s.role, K3sRole::Server);
    assert_eq!(facts.k3s.unit.as_deref(), Some("k3s-prod.service"));
    cfg.follow_k3s(&facts.k3s);
    assert_eq!(cfg.config.k3s.unit, "k3s-prod.service");
    let d = desired(&sys, &cfg, &facts);
    let dropin = d.file(&cfg.config.paths.k3s_audit_dropin).unwrap();
    assert_eq!(
        dropin.effects,
        vec![Effect::RestartK3s {
            unit: "k3s-prod.service".into()
        }]
    );
}

#[test]
fn disabled_and_skipped_stage_files_are_reported() {
    let root = fixture("flatcar-bakery");
    let r = root.path();
    let base = "/var/lib/rancher/k3s/server/manifests";
    write(r, &format!("{base}/sightline-30-falco.yaml.skip"), "");
    write(r, &format!("{base}/traefik.yaml.skip"), "");
    let (sys, cfg, facts) = load(r);
    let dir = &cfg.config.paths.manifests_dir;
    assert_eq!(
        facts.k3s.stage_skip_reason(dir, "sightline-10-base.yaml"),
        None
    );
    let why = facts
        .k3s
        .stage_skip_reason(dir, "sightline-30-falco.yaml")
        .unwrap();
    assert!(
        why.starts_with("k3s is told to skip this file: ")
            && why.contains("sightline-30-falco.yaml.skip exists"),
        "{why}"
    );
    assert_eq!(facts.k3s.skipped_stages.len(), 1);

    // `disable:` in a .yml drop-in disables sightline's whole directory.
    write(
        r,
        "/etc/rancher/k3s/config.yaml.d/50-trim.yml",
        "disable:\n  - traefik,sightline\n",
    );
    let facts = Facts::detect(&sys);
    let why = facts
        .k3s
        .stage_skip_reason(dir, "sightline-10-base.yaml")
        .unwrap_or_else(|| panic!("{dir} {:#?}", facts.k3s.manifests));
    assert!(
        why.contains(
            "--disable sightline (disable: in /etc/rancher/k3s/config.yaml.d/50-trim.yml)"
        ),
        "{why}"
    );

    // So does --disable on the command line; detect shows it.
    std::fs::remove_file(r.join("etc/rancher/k3s/config.yaml.d/50-trim.yml")).unwrap();
    write(
        r,
        "/etc/systemd/system/k3s.service.d/10-disable.conf",
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server --disable sightline\n",
    );
    write(r, &format!("{dir}/sightline-10-base.yaml"), "");
    let d = detect(r);
    let skipped = d["k3s"]["skipped_stages"].as_array().unwrap();
    assert_eq!(skipped[0]["file"], "sightline-10-base.yaml", "{skipped:?}");
    assert_eq!(skipped[0]["reason"]["kind"], "disabled");
    assert_eq!(skipped[0]["reason"]["set_in"], "the k3s command line");
}
