//! Notices as text a person reads on a phone: the node, what happened,
//! since when, and the one command to see more.

use serde::{Deserialize, Serialize};

use super::event::{EventKind, Notice, Phase, Severity};

/// The one command that shows more.
pub const SEE_MORE: &str = "sightline status";

/// A rendered message, the same for every channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id (for the queue and the logs).
    pub id: String,
    /// What it is about.
    pub kind: EventKind,
    /// How urgent.
    pub severity: Severity,
    /// True for a "resolved" message.
    pub resolved: bool,
    /// One line.
    pub title: String,
    /// Plain text, several lines.
    pub body: String,
}

/// `2026-12-01 03:12:05 UTC`.
pub fn utc(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    crate::clock::rfc3339(t)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// `3 min`, `2 h 5 min`, `1 d 4 h`.
pub fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) if m == 0 => format!("{secs} s"),
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// Renders a notice for the node `node`.
pub fn render(node: &str, n: &Notice) -> Message {
    let what = match n.kind {
        EventKind::StageFailed if !n.subject.is_empty() => {
            format!("stage {} failed", n.subject)
        }
        k => k.headline().to_string(),
    };
    let title = match n.phase {
        Phase::Resolved => format!("Resolved on {node}: {what}"),
        Phase::Repeat => format!("Still on {node}: {what}"),
        Phase::Firing => format!("{node}: {what}"),
    };
    let mut body = format!("Node: {node}\n");
    match n.phase {
        Phase::Resolved => body.push_str(&format!(
            "Resolved: {what}. It lasted {} (since {}).\n",
            span(n.at.saturating_sub(n.since)),
            utc(n.since)
        )),
        _ if n.kind.lasting() => {
            let age = n.at.saturating_sub(n.since);
            let ago = if age < 60 {
                "just now".to_string()
            } else {
                format!("{} ago", span(age))
            };
            body.push_str(&format!(
                "What: {what}.\nSince: {} ({ago}).\n",
                utc(n.since)
            ))
        }
        _ => body.push_str(&format!("What: {what}.\nWhen: {}.\n", utc(n.since))),
    }
    for d in &n.details {
        body.push_str(d);
        body.push('\n');
    }
    body.push_str(&format!("See more: {SEE_MORE}\n"));
    Message {
        id: format!(
            "{}-{:?}-{}-{}",
            n.at,
            n.phase,
            serde_json::to_value(n.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            n.subject
        )
        .to_lowercase(),
        kind: n.kind,
        severity: if n.phase == Phase::Resolved {
            Severity::Info
        } else {
            n.kind.severity()
        },
        resolved: n.phase == Phase::Resolved,
        title,
        body,
    }
}

/// The node's name as k3s spells it, so a message names the Node that
/// `kubectl get nodes` shows.
pub fn node_name(root: &crate::sysroot::Sysroot) -> String {
    crate::facts::k3s_node_name(root).name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_node_as_k3s_does() {
        let dir = tempfile::tempdir().unwrap();
        let put = |p: &str, text: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        put("etc/hostname", "raspberrypi\n");
        put("etc/rancher/k3s/config.yaml", "node-name: Edge-1\n");
        let root = crate::sysroot::Sysroot::new(dir.path());
        assert_eq!(node_name(&root), "edge-1");
    }

    #[test]
    fn states_node_what_since_and_command() {
        let n = Notice {
            kind: EventKind::K3sDown,
            subject: String::new(),
            phase: Phase::Firing,
            since: 1_780_000_000,
            at: 1_780_000_000 + 200,
            details: vec!["k3s is not serving: it failed.".into()],
        };
        let m = render("pi4-a", &n);
        assert_eq!(m.title, "pi4-a: k3s is down");
        assert!(m.body.contains("Node: pi4-a"), "{}", m.body);
        assert!(m.body.contains("Since: 2026-05-28"), "{}", m.body);
        assert!(m.body.contains("(3 min ago)"), "{}", m.body);
        assert!(m.body.ends_with("See more: sightline status\n"));
        assert_eq!(m.severity, Severity::Critical);
    }
}
