//! A real SMTP server on loopback: aiosmtpd (installed by scripts/test-deps
//! into its own venv). It records every accepted mail as a JSON line,
//! accepts AUTH PLAIN/LOGIN for one user without TLS, and refuses any
//! recipient starting with `refuse` with 550.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SERVER: &str = r#"
import json, sys, time, warnings
warnings.simplefilter("ignore")
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, out = int(sys.argv[1]), sys.argv[2]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        with open(out, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "login": login,
                                "data": envelope.content.decode("utf-8", "replace")}) + "\n")
        return "250 Message accepted for delivery"

def auth(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"k3s" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

c = Controller(Handler(), hostname="127.0.0.1", port=port,
               authenticator=auth, auth_require_tls=False)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// A running aiosmtpd.
pub struct Smtp {
    /// Its port.
    pub port: u16,
    /// Where accepted mails are recorded.
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The venv scripts/test-deps creates.
pub fn python() -> PathBuf {
    let cache = std::env::var_os("SIGHTLINE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("sightline")))
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sightline"));
    cache.join("smtp-venv/bin/python")
}

impl Smtp {
    /// Starts aiosmtpd, or returns `None` (after the shared missing-tool
    /// policy) when it is not installed.
    pub fn start() -> Option<Smtp> {
        let py = python();
        let found = Command::new(&py)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !super::available(
            found,
            &format!("aiosmtpd is not installed in {}", py.display()),
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mails.jsonl");
        std::fs::write(&log, "").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(&py)
            .args(["-c", SERVER, &port.to_string()])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Some(Smtp {
            port,
            log,
            child,
            _dir: dir,
        })
    }

    /// Mails accepted so far.
    pub fn mails(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
