//! Named failpoints for the kill-point sweep (bootupd's model).
//!
//! A crate-root module with no dependency on any other, so that the lowest
//! layers (the atomic write) can have points as well as the engine and the
//! rollout.
//!
//! Built only with the `failpoints` cargo feature, which only the tests
//! enable. `SIGHTLINE_FAILPOINT=name` (or `name@N` for the N-th hit, 1-based)
//! makes the process SIGKILL itself when it reaches that point, so the next
//! run meets exactly what a power cut or OOM kill there would leave.
//! `SIGHTLINE_FAILPOINT_LOG=path` appends every point reached, one a line,
//! so a sweep can list the points a run passes through.

/// Marks a point where the process may be killed in a test build.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::io::Write;
    use std::sync::Mutex;
    static HITS: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
    if let Some(log) = std::env::var_os("SIGHTLINE_FAILPOINT_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        let _ = writeln!(f, "{name}");
    }
    let Ok(want) = std::env::var("SIGHTLINE_FAILPOINT") else {
        return;
    };
    let (want_name, nth) = match want.split_once('@') {
        Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
        None => (want, 1),
    };
    if want_name != name {
        return;
    }
    let count = {
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        match hits.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                hits.push((name.to_string(), 1));
                1
            }
        }
    };
    if count == nth {
        eprintln!("failpoint {name}: killing myself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Marks a point where the process may be killed in a test build.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
