//! The cgroup controllers k3s refuses to start without, read under the
//! sysroot, and the kernel command line that switches them on.
//!
//! k3s checks the running kernel only (k3s-io/k3s, pkg/cgroups/cgroups_linux.go,
//! `Validate`): on the unified hierarchy (cgroup v2) the root's
//! `cgroup.controllers` must list `cpu`, `cpuset` and `memory`, else it exits
//! with "failed to find memory cgroup (v2)"; on cgroup v1 the memory
//! controller must be present, else "failed to find memory cgroup, you may
//! need to add "cgroup_memory=1 cgroup_enable=memory" to your linux cmdline
//! (/boot/cmdline.txt on a Raspberry Pi)". Raspberry Pi OS kernels leave the
//! memory controller off unless the command line enables it, which is why
//! the fix names the boot partition's `cmdline.txt`.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// The controllers k3s requires on cgroup v2 (`validateCgroupsV2`).
const REQUIRED_V2: [&str; 3] = ["cpu", "cpuset", "memory"];

/// The kernel parameters that turn the memory controller on, in the form
/// k3s's own error message asks for.
pub const MEMORY_FLAGS: &str = "cgroup_memory=1 cgroup_enable=memory";

/// Where the Raspberry Pi firmware reads the kernel command line from:
/// `/boot/firmware` since Raspberry Pi OS bookworm, `/boot` before.
const BOOT_CMDLINES: [&str; 2] = ["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"];

/// Which cgroup hierarchy the running kernel mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hierarchy {
    /// `/sys/fs/cgroup/cgroup.controllers` exists (unified).
    V2,
    /// Only `/proc/cgroups` tells (legacy or hybrid).
    V1,
}

/// What the running kernel says about the controllers k3s needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CgroupCheck {
    /// Every controller k3s checks is there.
    Ready {
        /// Where that was read.
        hierarchy: Hierarchy,
    },
    /// Controllers are missing, and the boot command line already enables
    /// them: the next boot fixes it.
    RebootPending {
        /// Where the controllers were read.
        hierarchy: Hierarchy,
        /// The controllers k3s will not find, e.g. `["memory"]`.
        missing: Vec<String>,
        /// The command line file that already carries the flags.
        boot_cmdline: String,
    },
    /// Controllers are missing and nothing enables them yet.
    Missing {
        /// Where the controllers were read.
        hierarchy: Hierarchy,
        /// The controllers k3s will not find.
        missing: Vec<String>,
        /// The Raspberry Pi `cmdline.txt` to add the flags to, when there is one.
        boot_cmdline: Option<String>,
    },
    /// Neither `/sys/fs/cgroup/cgroup.controllers` nor `/proc/cgroups` is
    /// readable under the root; the kernel command line decides.
    FromCmdline {
        /// True when `/proc/cmdline` enables the memory controller, false
        /// when it disables it.
        memory_enabled: bool,
    },
    /// Nothing to read at all (a fake root without /proc or /sys).
    Unknown,
}

impl CgroupCheck {
    /// True when k3s would start as far as cgroups go.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            CgroupCheck::Ready { .. }
                | CgroupCheck::FromCmdline {
                    memory_enabled: true
                }
        )
    }

    /// The lines `detect` prints: what k3s will find and, when it would
    /// refuse to start, how to fix it.
    pub fn report_lines(&self) -> Vec<String> {
        match self {
            CgroupCheck::Ready { hierarchy } => vec![format!(
                "cgroups: {} with {} (what k3s needs)",
                hierarchy.name(),
                required(*hierarchy).join(", ")
            )],
            CgroupCheck::FromCmdline {
                memory_enabled: true,
            } => vec!["cgroups: the kernel command line enables the memory controller".into()],
            CgroupCheck::FromCmdline {
                memory_enabled: false,
            } => vec![
                "cgroups: the kernel command line disables the memory controller; k3s will not start"
                    .into(),
                format!(
                    "  fix: remove cgroup_disable=memory and add \"{MEMORY_FLAGS}\" to the kernel command line, then reboot"
                ),
            ],
            CgroupCheck::RebootPending {
                hierarchy,
                missing,
                boot_cmdline,
            } => vec![
                format!(
                    "cgroups: {} lacks {}; k3s will not start until the next boot",
                    hierarchy.name(),
                    missing.join(", ")
                ),
                format!("  fix: reboot ({boot_cmdline} already enables it)"),
            ],
            CgroupCheck::Missing {
                hierarchy,
                missing,
                boot_cmdline,
            } => {
                let flags = flags_for(missing);
                let fix = match boot_cmdline {
                    Some(file) => format!(
                        "  fix: add \"{flags}\" to the end of the single line in {file}, then reboot"
                    ),
                    None => format!(
                        "  fix: add \"{flags}\" to the kernel command line (your boot loader's configuration), then reboot"
                    ),
                };
                vec![
                    format!(
                        "cgroups: {} lacks {}; k3s will not start (\"failed to find {} cgroup\")",
                        hierarchy.name(),
                        missing.join(", "),
                        missing[0]
                    ),
                    fix,
                ]
            }
            CgroupCheck::Unknown => Vec::new(),
        }
    }
}

impl Hierarchy {
    fn name(self) -> &'static str {
        match self {
            Hierarchy::V2 => "cgroup v2",
            Hierarchy::V1 => "cgroup v1",
        }
    }
}

fn required(h: Hierarchy) -> &'static [&'static str] {
    match h {
        Hierarchy::V2 => &REQUIRED_V2,
        // validateCgroupsV1 only fails on memory (cpuset is a warning).
        Hierarchy::V1 => &REQUIRED_V2[2..],
    }
}

/// The kernel parameters that enable `missing` controllers.
fn flags_for(missing: &[String]) -> String {
    let mut flags = Vec::new();
    if missing.iter().any(|c| c == "cpuset") {
        flags.push("cgroup_enable=cpuset");
    }
    if missing.iter().any(|c| c == "memory") {
        flags.push(MEMORY_FLAGS);
    }
    if flags.is_empty() {
        // cpu alone cannot be switched on from the command line; say what is needed.
        return format!("cgroup_enable={}", missing.join(" cgroup_enable="));
    }
    flags.join(" ")
}

/// Whether a kernel command line switches the memory controller on
/// (`Some(true)`), off (`Some(false)`), or says nothing (`None`). The kernel
/// handles `cgroup_enable=`/`cgroup_disable=` in order, so the last word wins.
fn cmdline_memory(cmdline: &str) -> Option<bool> {
    let mut state = None;
    for word in cmdline.split_whitespace() {
        let (on, list) = if let Some(l) = word.strip_prefix("cgroup_enable=") {
            (true, l)
        } else if let Some(l) = word.strip_prefix("cgroup_disable=") {
            (false, l)
        } else {
            continue;
        };
        if list.split(',').any(|c| c == "memory") {
            state = Some(on);
        }
    }
    state
}

/// The controllers the running kernel has, and from which hierarchy.
fn controllers(root: &Sysroot) -> Option<(Hierarchy, Vec<String>)> {
    if let Some(text) = root
        .read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .ok()
        .flatten()
    {
        return Some((
            Hierarchy::V2,
            text.split_whitespace().map(str::to_string).collect(),
        ));
    }
    // /proc/cgroups: "#subsys_name hierarchy num_cgroups enabled".
    let text = root.read_to_string("/proc/cgroups").ok().flatten()?;
    let enabled = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect();
    Some((Hierarchy::V1, enabled))
}

/// The Raspberry Pi boot command line file and its text, when there is one.
fn boot_cmdline(root: &Sysroot) -> Option<(String, String)> {
    BOOT_CMDLINES.iter().find_map(|p| {
        let text = root.read_to_string(p).ok().flatten()?;
        Some((p.to_string(), text))
    })
}

pub(super) fn detect(root: &Sysroot) -> CgroupCheck {
    let Some((hierarchy, have)) = controllers(root) else {
        return match super::read_trimmed(root, "/proc/cmdline")
            .as_deref()
            .and_then(cmdline_memory)
        {
            Some(memory_enabled) => CgroupCheck::FromCmdline { memory_enabled },
            None => CgroupCheck::Unknown,
        };
    };
    let missing: Vec<String> = required(hierarchy)
        .iter()
        .filter(|c| !have.iter().any(|h| h == *c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        return CgroupCheck::Ready { hierarchy };
    }
    match boot_cmdline(root) {
        Some((file, text))
            if missing.iter().all(|c| c == "memory") && cmdline_memory(&text) == Some(true) =>
        {
            CgroupCheck::RebootPending {
                hierarchy,
                missing,
                boot_cmdline: file,
            }
        }
        other => CgroupCheck::Missing {
            hierarchy,
            missing,
            boot_cmdline: other.map(|(file, _)| file),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Sysroot {
        Sysroot::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/roots")
                .join(name),
        )
    }

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Sysroot) {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let r = Sysroot::new(d.path());
        (d, r)
    }

    #[test]
    fn the_pi4_fixture_has_the_memory_controller() {
        let c = detect(&fixture("pi4"));
        assert_eq!(
            c,
            CgroupCheck::Ready {
                hierarchy: Hierarchy::V2
            }
        );
        assert!(c.is_ready());
        assert_eq!(
            c.report_lines(),
            ["cgroups: cgroup v2 with cpu, cpuset, memory (what k3s needs)"]
        );
    }

    #[test]
    fn a_pi_without_the_flags_is_told_which_file_to_edit() {
        let c = detect(&fixture("pi4-no-memory-cgroup"));
        assert_eq!(
            c,
            CgroupCheck::Missing {
                hierarchy: Hierarchy::V2,
                missing: vec!["memory".into()],
                boot_cmdline: Some("/boot/firmware/cmdline.txt".into()),
            }
        );
        assert!(!c.is_ready());
        let lines = c.report_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("lacks memory"), "{lines:?}");
        assert_eq!(
            lines[1],
            "  fix: add \"cgroup_memory=1 cgroup_enable=memory\" to the end of the single line in /boot/firmware/cmdline.txt, then reboot"
        );
    }

    #[test]
    fn flags_in_cmdline_txt_but_not_yet_booted_mean_reboot() {
        let (_d, r) = root_with(&[
            ("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n"),
            (
                "/boot/firmware/cmdline.txt",
                "console=tty1 root=PARTUUID=1-02 rootwait cgroup_memory=1 cgroup_enable=memory\n",
            ),
        ]);
        let c = detect(&r);
        assert_eq!(
            c,
            CgroupCheck::RebootPending {
                hierarchy: Hierarchy::V2,
                missing: vec!["memory".into()],
                boot_cmdline: "/boot/firmware/cmdline.txt".into(),
            }
        );
        assert!(c.report_lines()[1].contains("reboot"));
    }

    #[test]
    fn before_bookworm_the_file_is_boot_cmdline_txt_and_cpuset_is_named_too() {
        let (_d, r) = root_with(&[
            ("/sys/fs/cgroup/cgroup.controllers", "cpu io pids\n"),
            ("/boot/cmdline.txt", "console=tty1 rootwait\n"),
        ]);
        let c = detect(&r);
        assert_eq!(
            c,
            CgroupCheck::Missing {
                hierarchy: Hierarchy::V2,
                missing: vec!["cpuset".into(), "memory".into()],
                boot_cmdline: Some("/boot/cmdline.txt".into()),
            }
        );
        assert!(
            c.report_lines()[1]
                .contains("\"cgroup_enable=cpuset cgroup_memory=1 cgroup_enable=memory\""),
            "{:?}",
            c.report_lines()
        );
    }

    #[test]
    fn cgroup_v1_reads_proc_cgroups() {
        let (_d, r) = root_with(&[(
            "/proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t2\t1\t1\nmemory\t0\t1\t0\n",
        )]);
        assert_eq!(
            detect(&r),
            CgroupCheck::Missing {
                hierarchy: Hierarchy::V1,
                missing: vec!["memory".into()],
                boot_cmdline: None,
            }
        );
        let (_d, r) = root_with(&[("/proc/cgroups", "memory\t0\t1\t1\n")]);
        assert_eq!(
            detect(&r),
            CgroupCheck::Ready {
                hierarchy: Hierarchy::V1
            }
        );
    }

    #[test]
    fn without_controller_files_the_last_cmdline_word_wins() {
        let (_d, r) = root_with(&[(
            "/proc/cmdline",
            "cgroup_disable=memory console=tty1 cgroup_memory=1 cgroup_enable=memory\n",
        )]);
        assert_eq!(
            detect(&r),
            CgroupCheck::FromCmdline {
                memory_enabled: true
            }
        );
        let (_d, r) = root_with(&[(
            "/proc/cmdline",
            "cgroup_enable=cpuset,memory cgroup_disable=memory\n",
        )]);
        let c = detect(&r);
        assert_eq!(
            c,
            CgroupCheck::FromCmdline {
                memory_enabled: false
            }
        );
        assert!(!c.is_ready());
        let (_d, r) = root_with(&[("/proc/cmdline", "console=tty1\n")]);
        assert_eq!(detect(&r), CgroupCheck::Unknown);
        assert!(CgroupCheck::Unknown.report_lines().is_empty());
    }
}
