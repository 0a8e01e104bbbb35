//! Located configuration errors: file, line, column, what is wrong and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// Built-in default.
    Default,
    /// A file (host path), 1-based line and column.
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
        }
    }
}

/// A configuration error a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is.
    pub origin: Origin,
    /// What is wrong.
    pub message: String,
    /// The offending source line, when known.
    pub snippet: Option<String>,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    /// An error at byte offset `offset` of `text`, read from host path `path`.
    pub fn at(path: PathBuf, text: &str, offset: usize, message: String, fix: String) -> Self {
        let (line, column, snippet) = locate(text, offset);
        ConfigError {
            origin: Origin::File { path, line, column },
            message,
            snippet: Some(snippet),
            fix,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)?;
        if let (Some(snippet), Origin::File { column, .. }) = (&self.snippet, &self.origin) {
            write!(
                f,
                "\n    | {snippet}\n    | {}^",
                " ".repeat(column.saturating_sub(1))
            )?;
        }
        write!(f, "\n  fix: {}", self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of a byte offset, and that line's text.
pub fn locate(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    (
        line,
        column,
        text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_offsets() {
        let t = "a = 1\n[k3s]\nunit = 5\n";
        assert_eq!(locate(t, 0), (1, 1, "a = 1".into()));
        let off = t.find("5").unwrap();
        assert_eq!(locate(t, off), (3, 8, "unit = 5".into()));
    }
}
