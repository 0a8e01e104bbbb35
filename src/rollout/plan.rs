//! What a rollout would do to each stage file, decided without the API
//! (`sightline plan`).

use serde::{Deserialize, Serialize};

/// The action on one stage file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageAction {
    /// The file does not exist yet.
    Create,
    /// The file exists with other content.
    Update,
    /// The file is exactly the rendered one.
    Unchanged,
    /// The stage no longer applies: emptied, waited for, removed.
    Prune,
    /// The cluster layer does not apply to this machine.
    Skipped,
}

impl StageAction {
    /// For a stage that applies: from the file on disk (None: missing).
    pub fn for_file(on_disk: Option<&[u8]>, rendered: &[u8]) -> StageAction {
        match on_disk {
            None => StageAction::Create,
            Some(c) if c == rendered => StageAction::Unchanged,
            Some(_) => StageAction::Update,
        }
    }

    /// Lower-case name, as `plan` prints it.
    pub fn name(self) -> &'static str {
        match self {
            StageAction::Create => "create",
            StageAction::Update => "update",
            StageAction::Unchanged => "unchanged",
            StageAction::Prune => "prune",
            StageAction::Skipped => "skipped",
        }
    }

    /// Whether the rollout would change something.
    pub fn is_change(self) -> bool {
        !matches!(self, StageAction::Unchanged | StageAction::Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_from_the_file_on_disk() {
        assert_eq!(StageAction::for_file(None, b"a"), StageAction::Create);
        assert_eq!(
            StageAction::for_file(Some(b"a"), b"a"),
            StageAction::Unchanged
        );
        assert_eq!(StageAction::for_file(Some(b"b"), b"a"), StageAction::Update);
        assert_eq!(
            serde_json::to_value(StageAction::Prune).unwrap(),
            serde_json::json!(StageAction::Prune.name())
        );
        assert!(StageAction::Prune.is_change() && !StageAction::Skipped.is_change());
    }
}
