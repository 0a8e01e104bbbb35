//! A small HTTP/1.1 server on loopback that records every request (for the
//! ntfy and Discord channels) and answers each path with a scripted status.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    /// Body as text.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct Script {
    /// path → statuses to answer, in order; the last one repeats.
    answers: BTreeMap<String, Vec<u16>>,
    requests: Vec<Request>,
}

/// A running recorder.
pub struct HttpRecorder {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl HttpRecorder {
    /// Starts on a free port.
    pub fn start() -> HttpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script::default()));
        let s = script.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let mut headers = BTreeMap::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    let status = {
                        let mut s = s.lock().unwrap();
                        s.requests.push(Request {
                            method,
                            path: path.clone(),
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            at: Instant::now(),
                        });
                        match s.answers.get_mut(&path) {
                            Some(a) if a.len() > 1 => a.remove(0),
                            Some(a) => a[0],
                            None => 200,
                        }
                    };
                    let body = if status == 200 {
                        "{}"
                    } else {
                        "scripted failure"
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        HttpRecorder { url, script }
    }

    /// Answers `path` with these statuses in turn (the last one repeats).
    pub fn answer(&self, path: &str, statuses: &[u16]) {
        self.script
            .lock()
            .unwrap()
            .answers
            .insert(path.to_string(), statuses.to_vec());
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.script
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}
