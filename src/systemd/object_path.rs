//! A unit's D-Bus object path, computed from its name the way systemd
//! computes it, so that reading a unit's properties needs no `LoadUnit`
//! round trip first.
//!
//! systemd serves every unit at `/org/freedesktop/systemd1/unit/` plus the
//! unit name escaped by `bus_label_escape()` (src/basic/bus-label.c): every
//! byte that is not an ASCII letter, or a digit after the first byte,
//! becomes `_` and two lowercase hex digits; the empty name is `_`.
//! `unit_dbus_path_from_name()` (src/basic/unit-name.c) builds the path, and
//! systemctl reads properties through it directly
//! (src/systemctl/systemctl-show.c). An access through the path loads the
//! unit as `LoadUnit` would (`find_unit()` in src/core/dbus.c calls
//! `manager_load_unit_from_dbus_path()`, src/core/manager.c), so a unit
//! that does not exist answers with `LoadState` `not-found`, as before.

use anyhow::{Context, Result};
use zbus::OwnedObjectPath;

const PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// The object path systemd serves `unit` at.
pub fn unit_object_path(unit: &str) -> Result<OwnedObjectPath> {
    let mut path = String::with_capacity(PREFIX.len() + unit.len() * 3);
    path.push_str(PREFIX);
    if unit.is_empty() {
        path.push('_');
    }
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            path.push(char::from(b));
        } else {
            path.push('_');
            path.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            path.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
    }
    OwnedObjectPath::try_from(path).with_context(|| format!("the D-Bus object path of {unit:?}"))
}

#[cfg(test)]
mod tests {
    use super::unit_object_path;

    fn path(unit: &str) -> String {
        unit_object_path(unit).unwrap().as_str().to_string()
    }

    #[test]
    fn names_are_escaped_as_systemd_escapes_them() {
        // The paths systemd 252 itself reported (busctl monitor, LoadUnit
        // replies) for these units.
        assert_eq!(
            path("k3s.service"),
            "/org/freedesktop/systemd1/unit/k3s_2eservice"
        );
        assert_eq!(
            path("k3s-agent.service"),
            "/org/freedesktop/systemd1/unit/k3s_2dagent_2eservice"
        );
        assert_eq!(
            path("sightline-throttle.timer"),
            "/org/freedesktop/systemd1/unit/sightline_2dthrottle_2etimer"
        );
        // A digit is kept, except first; a byte above ASCII is escaped too.
        assert_eq!(
            path("0a1.service"),
            "/org/freedesktop/systemd1/unit/_30a1_2eservice"
        );
        assert_eq!(path("é"), "/org/freedesktop/systemd1/unit/_c3_a9");
        assert_eq!(path("a@b_c"), "/org/freedesktop/systemd1/unit/a_40b_5fc");
        assert_eq!(path(""), "/org/freedesktop/systemd1/unit/_");
    }
}
