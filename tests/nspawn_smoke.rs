//! Smoke test of the nspawn harness and the k3s stand-in: a real systemd 252
//! boots in a container, runs the stand-in as k3s.service, and reacts to a
//! bad audit configuration the way k3s does.
//!
//! Needs root; prints `SKIPPED: ...` and passes when containers cannot run
//! here (set SIGHTLINE_NSPAWN_REQUIRED=1 to fail instead).

mod common;

use std::time::{Duration, Instant};

use common::nspawn::{Container, K3S_TLS, Rootfs, install_standin_k3s, show, wait_until};
use sha2::{Digest, Sha256};

const STARTS: &str = "/var/lib/standin/starts.jsonl";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/50-audit.yaml";
const POLICY: &str = "/etc/rancher/k3s/audit-policy.yaml";

/// An HTTPS client run inside the container: `readyz cert|nocert [PATH]`.
const CLIENT: &str = r#"
import ssl, sys, urllib.error, urllib.request
tls = sys.argv[1]
ctx = ssl.create_default_context(cafile=tls + "/server-ca.crt")
if sys.argv[2] == "cert":
    ctx.load_cert_chain(tls + "/client-admin.crt", tls + "/client-admin.key")
try:
    r = urllib.request.urlopen("https://127.0.0.1:6443" + sys.argv[3], context=ctx, timeout=5)
    print(r.status, r.headers["Content-Type"], r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.headers["Content-Type"], e.read().decode())
except Exception as e:
    print("ERROR", type(e).__name__, e)
    sys.exit(1)
"#;

fn starts(c: &Container) -> Vec<serde_json::Value> {
    c.read_file(STARTS)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line in {STARTS}: {l:?}: {e}"))
        })
        .collect()
}

fn ok_starts(c: &Container) -> usize {
    starts(c).iter().filter(|s| s["ok"] == true).count()
}

fn is_active(c: &Container) -> String {
    let out = c.exec(&["systemctl", "is-active", "k3s"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn https(c: &Container, cert: &str, path: &str) -> std::process::Output {
    c.exec(&["python3", "-c", CLIENT, K3S_TLS, cert, path])
}

/// ActiveState of k3s.service read over the container's system bus from
/// the host, the way sightline talks to systemd.
fn active_state_over_dbus(address: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
        let unit: zbus::OwnedObjectPath = conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "GetUnit",
                &("k3s.service",),
            )
            .await
            .expect("GetUnit k3s.service")
            .body()
            .deserialize()
            .unwrap();
        let state: zbus::OwnedVariant = conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                unit.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Unit", "ActiveState"),
            )
            .await
            .expect("Get ActiveState")
            .body()
            .deserialize()
            .unwrap();
        String::try_from(state).unwrap()
    })
}

#[test]
fn nspawn_smoke() {
    let t0 = Instant::now();
    let prepared = match Container::prepare("smoke") {
        Ok(p) => p,
        Err(skip) => return skip.report(),
    };
    install_standin_k3s(&prepared);
    let c = match prepared.boot() {
        Ok(c) => c,
        Err(skip) => return skip.report(),
    };
    eprintln!(
        "first boot (rootfs from cache or built): {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // k3s is up, serving, and recorded a healthy start with no extra args.
    assert_eq!(
        is_active(&c),
        "active",
        "{}",
        show(&c.sh("systemctl status k3s --no-pager"))
    );
    assert_eq!(active_state_over_dbus(&c.bus_address()), "active");
    let first = starts(&c);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["ok"], true);
    assert_eq!(first[0]["kube_apiserver_args"], serde_json::json!([]));
    assert!(first[0]["audit_policy_sha256"].is_null());

    // mTLS: /readyz answers `ok` with the admin client cert, and the
    // handshake is refused without one.
    let out = https(&c, "cert", "/readyz");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 text/plain; charset=utf-8 ok"
    );
    let out = https(&c, "cert", "/api/v1/nodes");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("404 application/json"),
        "{}",
        show(&out)
    );
    let out = https(&c, "nocert", "/readyz");
    assert!(
        !out.status.success(),
        "/readyz without a client cert succeeded:\n{}",
        show(&out)
    );

    // An invalid audit policy makes k3s fail and keep restarting, with no
    // healthy start recorded.
    c.write_file(
        POLICY,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
        0o600,
    );
    c.write_file(
        DROPIN,
        format!("kube-apiserver-arg+:\n- audit-policy-file={POLICY}\n"),
        0o600,
    );
    let healthy = ok_starts(&c);
    let before = starts(&c).len();
    let out = c.exec(&["systemctl", "restart", "k3s"]);
    assert!(
        !out.status.success(),
        "restart with a bad policy succeeded:\n{}",
        show(&out)
    );
    wait_until("two failed starts of k3s", Duration::from_secs(20), || {
        starts(&c)[before..]
            .iter()
            .filter(|s| s["ok"] == false)
            .count()
            >= 2
    });
    assert_ne!(is_active(&c), "active");
    assert_eq!(
        ok_starts(&c),
        healthy,
        "a healthy start was recorded: {:?}",
        starts(&c)
    );
    let last = starts(&c).pop().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("apiserver exited: loading audit policy file"),
        "{last}"
    );
    let journal = c.sh_ok("journalctl -u k3s --no-pager");
    assert!(journal.contains("apiserver exited"), "{journal}");

    // Removing the drop-in brings it back by itself (Restart=always).
    c.remove_file(DROPIN);
    wait_until("k3s to be active again", Duration::from_secs(20), || {
        is_active(&c) == "active"
    });
    assert_eq!(ok_starts(&c), healthy + 1);
    assert!(https(&c, "cert", "/readyz").status.success());

    // A valid policy is loaded, and starts.jsonl proves which one.
    let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";
    c.write_file(POLICY, policy, 0o600);
    c.write_file(
        DROPIN,
        format!("kube-apiserver-arg+:\n- audit-policy-file={POLICY}\n- audit-log-path=/var/log/k3s-audit.log\n"),
        0o600,
    );
    c.sh_ok("systemctl restart k3s");
    let last = starts(&c).pop().unwrap();
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(
        last["audit_policy_sha256"],
        hex::encode(Sha256::digest(policy))
    );
    assert_eq!(
        last["kube_apiserver_args"],
        serde_json::json!([
            format!("audit-policy-file={POLICY}"),
            "audit-log-path=/var/log/k3s-audit.log"
        ])
    );
    drop(c);

    // A second container from the cached tarball, up and torn down fast.
    let t1 = Instant::now();
    let prepared = Container::prepare("smoke-cached").unwrap_or_else(|s| panic!("{s}"));
    install_standin_k3s(&prepared);
    let c = prepared.boot().unwrap_or_else(|s| panic!("{s}"));
    let booted = t1.elapsed();
    assert_eq!(is_active(&c), "active");
    drop(c);
    let total = t1.elapsed();
    eprintln!(
        "cached boot: {:.1} s to running, {:.1} s including halt and cleanup",
        booted.as_secs_f64(),
        total.as_secs_f64()
    );
    assert!(
        total < Duration::from_secs(10),
        "cached boot cycle took {total:?} (budget 10 s)"
    );
}
