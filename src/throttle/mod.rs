//! `sightline collect-throttle`: the Raspberry Pi throttle state as
//! node_exporter textfile metrics.
//!
//! The firmware's throttle word: bits 0–3 are conditions now (under-voltage,
//! ARM frequency capped, throttled, soft temperature limit); bits 16–19 are
//! the same conditions latched since boot.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::atomic::{Durability, create_dir_all, write_if_changed};
use crate::facts::ThrottleSource;
use crate::sysroot::Sysroot;

/// The SoC thermal zone.
pub const SOC_TEMP: &str = "/sys/class/thermal/thermal_zone0/temp";

/// One decoded condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// Metric stem, e.g. `under_voltage`.
    pub stem: &'static str,
    /// What it means.
    pub help: &'static str,
    /// Bit for "now"; the "occurred" bit is this plus 16.
    pub bit: u32,
}

/// The four conditions, in bit order.
pub const CONDITIONS: [Condition; 4] = [
    Condition {
        stem: "under_voltage",
        help: "Under-voltage detected",
        bit: 0,
    },
    Condition {
        stem: "freq_capped",
        help: "ARM frequency capped",
        bit: 1,
    },
    Condition {
        stem: "throttled",
        help: "CPU throttled",
        bit: 2,
    },
    Condition {
        stem: "soft_temp_limit",
        help: "Soft temperature limit active",
        bit: 3,
    },
];

/// A decoded throttle word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// The raw word.
    pub raw: u32,
}

impl Throttled {
    /// Parses `50005`, `0x50005` or `throttled=0x50005` (always hex, as the firmware prints it).
    pub fn parse(s: &str) -> Result<Throttled> {
        let t = s.trim().trim_end_matches('\0').trim();
        let t = t.strip_prefix("throttled=").unwrap_or(t);
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let raw = u32::from_str_radix(t, 16)
            .with_context(|| format!("throttle word {s:?} is not hex"))?;
        Ok(Throttled { raw })
    }

    /// Condition active now.
    pub fn now(&self, c: &Condition) -> bool {
        self.raw & (1 << c.bit) != 0
    }

    /// Condition occurred since boot.
    pub fn occurred(&self, c: &Condition) -> bool {
        self.raw & (1 << (c.bit + 16)) != 0
    }
}

/// Everything one collection found.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The throttle word.
    pub throttled: Throttled,
    /// SoC temperature, °C.
    pub soc_temp_celsius: Option<f64>,
    /// Core voltage, V (vcgencmd only).
    pub core_volts: Option<f64>,
}

/// Renders a sample in the Prometheus text exposition format.
pub fn render(s: &Sample) -> String {
    let mut out = String::new();
    for c in &CONDITIONS {
        for (suffix, when, value) in [
            ("now", "now", s.throttled.now(c)),
            (
                "occurred",
                "has occurred since boot",
                s.throttled.occurred(c),
            ),
        ] {
            let name = format!("rpi_{}_{suffix}", c.stem);
            let _ = writeln!(
                out,
                "# HELP {name} {} {when} (1) or not (0), from the firmware throttle word.",
                c.help
            );
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", u8::from(value));
        }
    }
    if let Some(t) = s.soc_temp_celsius {
        out.push_str("# HELP rpi_soc_temp_celsius SoC temperature in degrees Celsius.\n");
        out.push_str("# TYPE rpi_soc_temp_celsius gauge\n");
        let _ = writeln!(out, "rpi_soc_temp_celsius {t}");
    }
    if let Some(v) = s.core_volts {
        out.push_str(
            "# HELP rpi_core_volts SoC core voltage in volts, from vcgencmd measure_volts core.\n",
        );
        out.push_str("# TYPE rpi_core_volts gauge\n");
        let _ = writeln!(out, "rpi_core_volts {v}");
    }
    out
}

/// Reads a sample from the machine under `root`.
pub fn collect(root: &Sysroot, source: &ThrottleSource) -> Result<Sample> {
    let (throttled, vcgencmd) = match source {
        ThrottleSource::Sysfs => {
            let file = crate::facts::throttle_sysfs();
            let text = root
                .read_to_string(file)
                .with_context(|| format!("reading {file}"))?
                .with_context(|| format!("{file} disappeared"))?;
            let word = Throttled::parse(&text).with_context(|| format!("reading {file}"))?;
            (word, crate::facts::find_vcgencmd(root))
        }
        ThrottleSource::Vcgencmd(path) => (
            Throttled::parse(&run(root, path, &["get_throttled"])?)
                .with_context(|| format!("the output of {path} get_throttled"))?,
            Some(path.clone()),
        ),
        ThrottleSource::None => bail!(
            "no throttle source: neither {} nor vcgencmd exists (this is not a Raspberry Pi)",
            crate::facts::throttle_sysfs()
        ),
    };
    let soc_temp_celsius = root
        .read_to_string(SOC_TEMP)
        .ok()
        .flatten()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .map(|milli| milli / 1000.0);
    let core_volts = vcgencmd
        .and_then(|p| run(root, &p, &["measure_volts", "core"]).ok())
        .and_then(|o| parse_volts(&o));
    Ok(Sample {
        throttled,
        soc_temp_celsius,
        core_volts,
    })
}

/// Parses `volt=0.8563V`.
pub fn parse_volts(s: &str) -> Option<f64> {
    s.trim()
        .strip_prefix("volt=")?
        .trim_end_matches('V')
        .parse()
        .ok()
}

/// How long vcgencmd may take. It answers in milliseconds; a stuck firmware
/// mailbox once hung `collect-throttle` (and the timer behind it) for good.
pub const VCGENCMD_TIMEOUT: Duration = Duration::from_secs(5);

fn run(root: &Sysroot, host_path: &str, args: &[&str]) -> Result<String> {
    run_with_timeout(root, host_path, args, VCGENCMD_TIMEOUT)
}

/// Runs a host program, killing it (and anything it started: it gets a
/// process group of its own) when it outlives `timeout`.
fn run_with_timeout(
    root: &Sysroot,
    host_path: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String> {
    let what = format!("{host_path} {}", args.join(" "));
    let mut child = Command::new(root.resolve(host_path))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {host_path}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    // Read on the side so a chatty child never blocks on a full pipe while
    // the clock runs.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        if started.elapsed() >= timeout {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            tracing::warn!(program = %host_path, timeout_s = timeout.as_secs(), "killed a stuck child");
            bail!(
                "{what} did not answer within {} s and was killed; check the firmware (dmesg) and /dev/vchiq",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} exited with {status}");
    }
    crate::sysroot::utf8(out).with_context(|| format!("the output of {what}"))
}

/// Writes a metrics textfile, creating its directory if needed. No fsync:
/// the rename keeps the file whole for node_exporter, and a sample lost to a
/// power cut is replaced at the next tick. Unchanged content is not
/// rewritten.
pub fn write(root: &Sysroot, output: &str, text: &str) -> Result<()> {
    let real = root.path(output);
    if let Some(dir) = Path::new(&real).parent() {
        create_dir_all(dir, 0o755).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_if_changed(&real, text.as_bytes(), 0o644, Durability::Volatile)
        .map(|_| ())
        .with_context(|| format!("writing {output}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_words() {
        let t = Throttled::parse("50005\n").unwrap();
        assert!(t.now(&CONDITIONS[0]) && t.now(&CONDITIONS[2]));
        assert!(!t.now(&CONDITIONS[1]) && !t.now(&CONDITIONS[3]));
        assert!(t.occurred(&CONDITIONS[0]) && t.occurred(&CONDITIONS[2]));
        assert!(!t.occurred(&CONDITIONS[1]));
        let t = Throttled::parse("throttled=0x80008").unwrap();
        assert!(t.now(&CONDITIONS[3]) && t.occurred(&CONDITIONS[3]));
        assert!(!t.now(&CONDITIONS[0]));
        assert_eq!(Throttled::parse("0x0").unwrap().raw, 0);
        assert!(Throttled::parse("zz").is_err());
    }

    #[test]
    fn volts() {
        assert_eq!(parse_volts("volt=0.8563V\n"), Some(0.8563));
        assert_eq!(parse_volts("nope"), None);
    }

    // The children are /bin/sh itself: a script written by the test and
    // executed at once can fail with ETXTBSY while another test thread forks.
    #[test]
    fn a_stuck_child_is_killed_after_the_timeout() {
        let t = Instant::now();
        let e = run_with_timeout(
            &Sysroot::default(),
            "/bin/sh",
            &["-c", "echo started; sleep 60"],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(e.to_string().contains("did not answer"), "{e}");
    }

    #[test]
    fn non_utf8_output_names_the_program() {
        let e = run(
            &Sysroot::default(),
            "/bin/sh",
            &["-c", "printf 'throttled=\\377'"],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("/bin/sh -c"), "{e:#}");
        assert!(format!("{e:#}").contains("not UTF-8"), "{e:#}");
    }
}
