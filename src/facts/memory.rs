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
    let text = match root.read_to_string("/proc/meminfo") {
        Ok(Some(t)) => t,
        Ok(None) => return Memory::default(),
        Err(e) => {
            tracing::warn!(file = "/proc/meminfo", error = %e, "cannot read memory totals; taking 0");
            return Memory::default();
        }
    };
    parse(&text).unwrap_or_else(|bad| {
        tracing::warn!(file = "/proc/meminfo", field = %bad.field, value = %bad.value, "memory value does not fit in 64 bits of bytes; taking 0");
        Memory::default()
    })
}

/// A meminfo value that does not fit: a wrap-around would have made a
/// huge machine look tiny (or the reverse) without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// The meminfo field, e.g. `MemTotal`.
    pub field: String,
    /// Its text as read.
    pub value: String,
}

/// Parses meminfo text. Kernels before 3.14 lack MemAvailable; fall back to
/// free + buffers + cached, which is what it approximates. Arithmetic is
/// checked: a value that overflows is reported, never wrapped.
pub fn parse(text: &str) -> Result<Memory, BadValue> {
    let field = |name: &str| -> Result<Option<u64>, BadValue> {
        let Some(rest) = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        else {
            return Ok(None);
        };
        let raw = rest.trim().trim_end_matches("kB").trim();
        let bad = || BadValue {
            field: name.to_string(),
            value: raw.to_string(),
        };
        match raw.parse::<u64>() {
            Ok(kb) => kb.checked_mul(1024).map(Some).ok_or_else(bad),
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Err(bad()),
            // Not a number at all: the field is as good as absent.
            Err(_) => Ok(None),
        }
    };
    let total = field("MemTotal")?.unwrap_or(0);
    let available = match field("MemAvailable")? {
        Some(a) => a,
        None => {
            let mut sum = 0u64;
            for name in ["MemFree", "Buffers", "Cached"] {
                sum = sum
                    .checked_add(field(name)?.unwrap_or(0))
                    .ok_or_else(|| BadValue {
                        field: format!("MemFree + Buffers + Cached (at {name})"),
                        value: "overflow".into(),
                    })?;
            }
            sum
        }
    };
    Ok(Memory {
        total_bytes: total,
        available_bytes: available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = parse(
            "MemTotal:        3884504 kB\nMemFree:          100 kB\nMemAvailable:    3207864 kB\n",
        )
        .unwrap();
        assert_eq!(m.total_bytes, 3_884_504 * 1024);
        assert_eq!(m.available_bytes, 3_207_864 * 1024);
    }

    #[test]
    fn old_kernel_fallback() {
        let m =
            parse("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n").unwrap();
        assert_eq!(m.available_bytes, 310 * 1024);
    }

    #[test]
    fn overflow_is_reported_not_wrapped() {
        // 2^64 / 1024 + 1 kB: fits in u64 as kB, not as bytes.
        let e = parse("MemTotal: 18014398509481985 kB\n").unwrap_err();
        assert_eq!(e.field, "MemTotal");
        assert_eq!(e.value, "18014398509481985");
        let e = parse("MemTotal: 99999999999999999999999 kB\n").unwrap_err();
        assert_eq!(e.field, "MemTotal");
        let e =
            parse("MemFree: 18014398509481983 kB\nBuffers: 18014398509481983 kB\nCached: 1 kB\n")
                .unwrap_err();
        assert!(e.field.contains("Buffers"), "{e:?}");
    }
}
