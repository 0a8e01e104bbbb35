//! The operating system from os-release.

use serde::Serialize;

use super::Board;
use crate::sysroot::Sysroot;

/// Operating systems sightline knows how to treat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    /// Ubuntu.
    Ubuntu,
    /// Debian (not Raspberry Pi OS).
    Debian,
    /// Raspberry Pi OS (Raspbian on 32-bit, Debian-based on 64-bit).
    RaspberryPiOs,
    /// Flatcar Container Linux: read-only /usr, sysext, Ignition.
    Flatcar,
    /// Anything else.
    Other,
}

/// os-release facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Os {
    /// `ID`.
    pub id: String,
    /// `VERSION_ID`.
    pub version_id: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// Classification.
    pub family: OsFamily,
}

pub(super) fn detect(root: &Sysroot, board: Board) -> Os {
    let text = root
        .read_to_string("/etc/os-release")
        .ok()
        .flatten()
        .or_else(|| root.read_to_string("/usr/lib/os-release").ok().flatten())
        .unwrap_or_default();
    // 64-bit Raspberry Pi OS reports ID=debian; its marker file tells it apart.
    let rpi_marker = root.exists("/etc/rpi-issue");
    parse(&text, board == Board::RaspberryPi && rpi_marker)
}

/// Parses os-release text.
pub fn parse(text: &str, raspberry_pi_os_marker: bool) -> Os {
    let get = |key: &str| -> Option<String> {
        text.lines().find_map(|l| {
            let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(unquote(v))
        })
    };
    let id = get("ID").unwrap_or_else(|| "linux".into());
    let id_like = get("ID_LIKE").unwrap_or_default();
    let family = match id.as_str() {
        "ubuntu" => OsFamily::Ubuntu,
        "raspbian" => OsFamily::RaspberryPiOs,
        "flatcar" => OsFamily::Flatcar,
        "debian" if raspberry_pi_os_marker => OsFamily::RaspberryPiOs,
        "debian" => OsFamily::Debian,
        _ if id_like.split_whitespace().any(|l| l == "ubuntu") => OsFamily::Ubuntu,
        _ => OsFamily::Other,
    };
    Os {
        id,
        version_id: get("VERSION_ID"),
        pretty_name: get("PRETTY_NAME"),
        family,
    }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let o = parse(
            "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n",
            false,
        );
        assert_eq!(
            (o.family, o.version_id.as_deref()),
            (OsFamily::Ubuntu, Some("24.04"))
        );
        assert_eq!(
            parse("ID=raspbian\nVERSION_ID=\"12\"\n", false).family,
            OsFamily::RaspberryPiOs
        );
        assert_eq!(
            parse("ID=debian\nVERSION_ID=\"12\"\n", true).family,
            OsFamily::RaspberryPiOs
        );
        assert_eq!(
            parse("ID=debian\nVERSION_ID=\"12\"\n", false).family,
            OsFamily::Debian
        );
        let f = parse(
            "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION_ID=4081.2.0\n",
            false,
        );
        assert_eq!(
            (f.family, f.version_id.as_deref()),
            (OsFamily::Flatcar, Some("4081.2.0"))
        );
        assert_eq!(
            parse("ID=pop\nID_LIKE=\"ubuntu debian\"\n", false).family,
            OsFamily::Ubuntu
        );
    }
}
