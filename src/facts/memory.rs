//! Memory totals from `/proc/meminfo`.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// Total and available memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Memory {
    /// MemTotal.
    pub total_bytes: u64,
    /// MemAvailable: what new workloads can use without swapping.
    pub available_bytes: u64,
}

pub(super) fn detect(root: &Sysroot) -> Memory {
    root.read_to_string("/proc/meminfo")
        .ok()
        .flatten()
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Parses meminfo text. Kernels before 3.14 lack MemAvailable; fall back to
/// free + buffers + cached, which is what it approximates.
pub fn parse(text: &str) -> Memory {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    let total = field("MemTotal").unwrap_or(0);
    let available = field("MemAvailable").unwrap_or_else(|| {
        field("MemFree").unwrap_or(0) + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0)
    });
    Memory {
        total_bytes: total,
        available_bytes: available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = parse(
            "MemTotal:        3884504 kB\nMemFree:          100 kB\nMemAvailable:    3207864 kB\n",
        );
        assert_eq!(m.total_bytes, 3_884_504 * 1024);
        assert_eq!(m.available_bytes, 3_207_864 * 1024);
    }

    #[test]
    fn old_kernel_fallback() {
        let m = parse("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n");
        assert_eq!(m.available_bytes, 310 * 1024);
    }
}
