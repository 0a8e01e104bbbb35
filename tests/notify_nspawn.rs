//! Under a real systemd 252 (nspawn) with the stand-in k3s: how the
//! notifier tells "k3s stopped on purpose" from "k3s down by failure",
//! read over D-Bus exactly as the daemon reads it.

mod common;

use std::time::Duration;

use common::nspawn::{Container, Rootfs, install_standin_k3s, show, wait_until};

fn boot() -> Option<Container> {
    let p = match Container::prepare("notify") {
        Ok(p) => p,
        Err(skip) => {
            skip.report();
            return None;
        }
    };
    install_standin_k3s(&p);
    p.install_file(env!("CARGO_BIN_EXE_sightline"), "/usr/bin/sightline", 0o755);
    let c = p.boot().unwrap_or_else(|s| panic!("{s}"));
    wait_until("k3s active", Duration::from_secs(30), || {
        c.sh("systemctl is-active k3s").status.success()
    });
    Some(c)
}

fn k3s_state(c: &Container) -> serde_json::Value {
    let out = c.exec(&["sightline", "notify", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["k3s"].clone()
}

#[test]
fn stopped_on_purpose_is_told_from_stopped_by_failure() {
    let Some(c) = boot() else { return };
    wait_until("k3s ready", Duration::from_secs(30), || {
        k3s_state(&c)["state"] == "ready"
    });

    // A stop job someone started: inactive, Result=success.
    c.sh_ok("systemctl stop k3s");
    let s = k3s_state(&c);
    assert_eq!(s["state"], "on_purpose", "{s}");
    assert_eq!(s["how"], "stopped_by_job", "{s}");
    let text = String::from_utf8_lossy(&c.exec(&["sightline", "notify"]).stdout).into_owned();
    assert!(
        text.contains("k3s: stopped on purpose (it was stopped by a stop job and exited cleanly (inactive, Result=success)); not reported"),
        "{text}"
    );

    // Crash-looping on a configuration the apiserver refuses: systemd
    // restarts it (Restart=always), Result=exit-code.
    c.write_file(
        "/etc/rancher/k3s/config.yaml.d/99-bad.yaml",
        "kube-apiserver-arg+:\n  - audit-policy-file=/nonexistent.yaml\n",
        0o644,
    );
    // (--no-block: the start job itself fails; systemd then restarts it.)
    c.sh_ok("systemctl start --no-block k3s");
    wait_until(
        "down by failure, restarting",
        Duration::from_secs(20),
        || {
            let s = k3s_state(&c);
            s["state"] == "down"
                && s["cause"]["kind"] == "restarting"
                && s["cause"]["detail"] == "exit-code"
        },
    );

    // Failing for good: no more restarts, the unit is failed.
    c.sh_ok(
        "mkdir -p /etc/systemd/system/k3s.service.d && printf '[Service]\\nRestart=no\\n' >/etc/systemd/system/k3s.service.d/no-restart.conf && systemctl daemon-reload",
    );
    wait_until("failed", Duration::from_secs(20), || {
        let s = k3s_state(&c);
        s["cause"]["kind"] == "failed" && s["cause"]["detail"] == "exit-code"
    });

    // Disabled by the administrator: on purpose, whatever its last Result.
    c.sh_ok("systemctl disable k3s");
    let s = k3s_state(&c);
    assert_eq!(s["state"], "on_purpose", "{s}");
    assert_eq!(s["how"], "disabled", "{s}");
}
