//! The k3s unit as a real systemd 252 describes it over D-Bus, compared
//! with what sightline finds in the unit files of the same root without a
//! bus: the bakery's layout in `/usr/local/lib/systemd/system`, an enabling
//! wants link, drop-ins from several directories, an `INSTALL_K3S_NAME`
//! unit, and the environment that names the k3s config file.
//!
//! Needs root; prints `SKIPPED: ...` when containers cannot run here (set
//! SIGHTLINE_NSPAWN_REQUIRED=1 to fail instead).

mod common;

use common::nspawn::{Container, Rootfs};
use common::repo;
use sightline::facts::{Facts, K3sRole, UNIT_PATTERNS, UnitSource};
use sightline::sysroot::Sysroot;
use sightline::systemd::{SystemdClient, unit_object_path};

const BAKERY_DIR: &str = "/usr/local/lib/systemd/system";

fn link(rootfs: &impl Rootfs, path: &str, target: &str) {
    let p = rootfs.host_path(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

#[test]
fn systemd_and_the_file_search_agree_on_the_k3s_unit() {
    let p = match Container::prepare("k3s-units") {
        Ok(p) => p,
        Err(skip) => {
            skip.report();
            return;
        }
    };
    let fixture = repo().join("tests/fixtures/roots/flatcar-bakery/usr/local/lib/systemd/system");
    for u in ["k3s.service", "k3s-agent.service"] {
        p.install_file(fixture.join(u), &format!("{BAKERY_DIR}/{u}"), 0o644);
    }
    link(
        &p,
        "/etc/systemd/system/multi-user.target.wants/k3s.service",
        &format!("{BAKERY_DIR}/k3s.service"),
    );
    // Drop-ins in three directories systemd merges by file name.
    p.write_file(
        "/etc/systemd/system/service.d/05-sightline-test.conf",
        "# applies to every service; empty on purpose\n",
        0o644,
    );
    p.write_file(
        "/usr/lib/systemd/system/k3s.service.d/10-vendor.conf",
        "[Service]\nEnvironment=\"K3S_CONFIG_FILE=/etc/k3s/vendor.yaml\"\n",
        0o644,
    );
    p.write_file(
        "/etc/systemd/system/k3s.service.d/20-local.conf",
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=anonymous-auth=false' \\\n\t--disable \"traefik, sightline\"\n",
        0o644,
    );
    // The unit's EnvironmentFile=-/etc/default/%N overrides Environment=.
    p.write_file(
        "/etc/default/k3s",
        "K3S_CONFIG_FILE=/etc/k3s/cluster.yaml\n",
        0o644,
    );
    p.write_file(
        "/etc/k3s/cluster.yaml",
        "write-kubeconfig-mode: \"0600\"\n",
        0o600,
    );
    // An INSTALL_K3S_NAME=prod install next to it, not enabled.
    p.write_file(
        "/etc/systemd/system/k3s-prod.service",
        "[Service]\nType=notify\nExecStart=/usr/local/bin/k3s server\n",
        0o644,
    );
    let c = p.boot().expect("booting the container");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let infos = rt.block_on(async {
        let client = SystemdClient::connect(Some(&c.bus_address()))
            .await
            .unwrap();
        client.unit_infos(&UNIT_PATTERNS).await.unwrap()
    });
    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["k3s-agent.service", "k3s-prod.service", "k3s.service"]
    );
    let k3s = infos.iter().find(|i| i.name == "k3s.service").unwrap();
    // Enabled, so systemd tries to start it at boot; there is no k3s binary,
    // so it is activating (auto-restart) or failed, never plain inactive.
    assert!(k3s.loaded && k3s.enabled, "{k3s:#?}");
    assert_eq!(
        k3s.fragment_path.as_deref(),
        Some("/usr/local/lib/systemd/system/k3s.service")
    );

    let root = Sysroot::new(c.root());
    let by_bus = Facts::detect_with_units(&root, Some(&infos)).k3s;
    let mut by_files = Facts::detect(&root).k3s;
    assert_eq!(by_bus.unit_from, Some(UnitSource::Bus));
    assert_eq!(by_files.unit_from, Some(UnitSource::Files));
    by_files.unit_from = by_bus.unit_from;
    assert_eq!(by_files, by_bus, "systemd: {k3s:#?}");
    assert_eq!(by_bus.role, K3sRole::Server);
    assert_eq!(by_bus.config.file, "/etc/k3s/cluster.yaml");
    assert_eq!(
        by_bus.unit_dropins,
        vec![
            "/etc/systemd/system/service.d/05-sightline-test.conf",
            "/usr/lib/systemd/system/k3s.service.d/10-vendor.conf",
            "/etc/systemd/system/k3s.service.d/20-local.conf",
        ]
    );
    assert_eq!(by_bus.cli_apiserver_args, vec!["anonymous-auth=false"]);
    let disabled: Vec<&str> = by_bus
        .manifests
        .disables
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(disabled, vec!["traefik", "sightline"]);
}

#[test]
fn unit_object_paths_are_the_ones_systemd_gives() {
    // sightline reads a unit's properties at the path it computes from the
    // name, without asking LoadUnit first; systemd's own answer decides.
    // Only unit names, not aliases: for an alias LoadUnit answers with the
    // path of the unit it names, while the alias's own path serves the
    // same unit.
    let c = match Container::boot("unit-paths") {
        Ok(c) => c,
        Err(skip) => {
            skip.report();
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = [
        "k3s.service",
        "k3s-agent.service",
        "k3s-prod.service",
        "sightline-throttle.timer",
        "getty@tty1.service",
        "systemd-journald.service",
        "-.mount",
        "dbus.socket",
        "k3s_2.service",
        "0k3s.service",
        "a\\x2db.service",
    ];
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(c.bus_address().as_str())
            .build()
            .await
            .unwrap();
        for name in names {
            let reply = conn
                .call_method(
                    Some("org.freedesktop.systemd1"),
                    "/org/freedesktop/systemd1",
                    Some("org.freedesktop.systemd1.Manager"),
                    "LoadUnit",
                    &(name,),
                )
                .await
                .unwrap_or_else(|e| panic!("LoadUnit {name}: {e}"));
            let systemd: zbus::OwnedObjectPath = reply.body().deserialize().unwrap();
            assert_eq!(
                unit_object_path(name).unwrap().as_str(),
                systemd.as_str(),
                "{name}"
            );
        }
    });
}
