//! The documentation of every configuration key, read from the one source
//! that documents them: `files/config.toml`, the commented defaults the
//! packages ship as `/etc/sightline/config.toml`. `sightline manpage`
//! renders `sightline.toml(5)` from the same text, so the page and the file
//! cannot say different things; the tests tie both to the schema.
//!
//! The file's layout is the contract:
//! - the leading comment block, up to the first blank line, is the preamble;
//! - a comment block right under a `[section]` header and followed by a
//!   blank line describes the section;
//! - a comment block directly above `#key = value` (no blank line between)
//!   describes that key, and `value` is its default (or, for keys unset by
//!   default, an example);
//! - nothing is set: every key line is commented out.

/// The commented defaults, as shipped.
pub const SHIPPED: &str = include_str!("../../files/config.toml");

/// One documented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// The key within its section, e.g. `unit`.
    pub key: String,
    /// The value shown, as TOML (the default, or an example for optional keys).
    pub value: String,
    /// The comment lines above the key, without `# `.
    pub doc: Vec<String>,
    /// Line number in `files/config.toml`.
    pub line: usize,
}

/// One table, or the top level (`name` empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectionDoc {
    /// The table name, e.g. `k3s`; empty for the top-level keys.
    pub name: String,
    /// The section's own description.
    pub doc: Vec<String>,
    /// Its keys, in file order.
    pub keys: Vec<KeyDoc>,
}

impl SectionDoc {
    /// `section.key`, or `key` at the top level.
    pub fn dotted(&self, key: &KeyDoc) -> String {
        if self.name.is_empty() {
            key.key.clone()
        } else {
            format!("{}.{}", self.name, key.key)
        }
    }
}

/// The whole file, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDoc {
    /// The leading comment block.
    pub preamble: Vec<String>,
    /// Top level first, then each table in file order.
    pub sections: Vec<SectionDoc>,
}

/// Parses the shipped file; `Err` names the line that breaks the layout.
pub fn shipped() -> Result<ConfigDoc, String> {
    parse(SHIPPED)
}

/// Parses text laid out like `files/config.toml`.
pub fn parse(text: &str) -> Result<ConfigDoc, String> {
    let mut out = ConfigDoc {
        sections: vec![SectionDoc::default()],
        ..ConfigDoc::default()
    };
    let mut pending: Vec<String> = Vec::new();
    let mut in_preamble = true;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let section = out.sections.last_mut().expect("never empty");
        if in_preamble {
            match comment_text(line) {
                Some(t) => out.preamble.push(t),
                None if line.trim().is_empty() => in_preamble = false,
                None => {
                    return Err(format!(
                        "line {n}: the file must start with a comment block"
                    ));
                }
            }
            continue;
        }
        if line.trim().is_empty() {
            if section.keys.is_empty() && !section.name.is_empty() && section.doc.is_empty() {
                section.doc = std::mem::take(&mut pending);
            } else if !pending.is_empty() {
                return Err(format!(
                    "line {}: a comment block followed by a blank line documents no key; put it directly above the key",
                    n - 1
                ));
            }
        } else if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| format!("line {n}: a table header must end with ']'"))?;
            if !pending.is_empty() {
                return Err(format!(
                    "line {n}: the comment above [{name}] belongs under it"
                ));
            }
            out.sections.push(SectionDoc {
                name: name.to_string(),
                ..SectionDoc::default()
            });
        } else if let Some(t) = comment_text(line) {
            pending.push(t);
        } else if let Some((key, value)) =
            line.strip_prefix('#').and_then(|kv| kv.split_once(" = "))
        {
            section.keys.push(KeyDoc {
                key: key.to_string(),
                value: value.to_string(),
                doc: std::mem::take(&mut pending),
                line: n,
            });
        } else {
            return Err(format!(
                "line {n}: expected a comment, '#key = value' or a [table]; the shipped file sets nothing, so every key stays commented out"
            ));
        }
    }
    Ok(out)
}

/// The text of a comment line (`# text` or a lone `#`), or None for
/// anything else, including a commented-out `#key = value`.
fn comment_text(line: &str) -> Option<String> {
    if line == "#" {
        return Some(String::new());
    }
    line.strip_prefix("# ").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::{Config, OPTIONAL_KEYS};

    /// Every key of the schema, dotted.
    fn schema_keys() -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = OPTIONAL_KEYS.iter().map(|k| k.to_string()).collect();
        for (k, v) in toml::Table::try_from(Config::default()).unwrap() {
            match v.as_table() {
                Some(t) => keys.extend(t.keys().map(|kk| format!("{k}.{kk}"))),
                None => {
                    keys.insert(k);
                }
            }
        }
        keys
    }

    #[test]
    fn every_key_of_the_schema_is_documented_in_the_shipped_file() {
        let doc = shipped().unwrap_or_else(|e| panic!("files/config.toml: {e}"));
        assert!(!doc.preamble.is_empty());
        let mut seen = BTreeSet::new();
        for s in &doc.sections {
            for k in &s.keys {
                assert!(
                    !k.doc.is_empty(),
                    "files/config.toml:{}: {} has no description; add a comment line directly above it",
                    k.line,
                    s.dotted(k)
                );
                assert!(
                    seen.insert(s.dotted(k)),
                    "{} is documented twice",
                    s.dotted(k)
                );
            }
        }
        assert_eq!(seen, schema_keys(), "files/config.toml against the schema");
    }

    #[test]
    fn the_layout_rules_are_enforced() {
        let ok = "# preamble\n\n[a]\n# A.\n\n# The key.\n#k = 1\n";
        let doc = parse(ok).unwrap();
        assert_eq!(doc.sections[1].doc, ["A."]);
        assert_eq!(doc.sections[1].keys[0].doc, ["The key."]);
        assert_eq!(doc.sections[1].keys[0].value, "1");
        for (bad, why) in [
            ("k = 1\n", "start with a comment"),
            ("# p\n\nk = 1\n", "sets nothing"),
            (
                "# p\n\n[a]\n#k = 1\n# stray\n\n#j = 2\n",
                "documents no key",
            ),
            ("# p\n\n# above\n[a]\n", "belongs under it"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
