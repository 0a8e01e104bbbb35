//! Helm values: the common file deep-merged with a tier overlay.

use anyhow::{Context, Result};
use serde_yaml_ng::{Mapping, Value};

use super::Bundle;
use crate::decide::Tier;

/// Bundle path of a release's common values.
pub fn common_path(release: &str) -> String {
    format!("values/{release}.yaml")
}

/// Bundle path of a release's tier overlay.
pub fn overlay_path(release: &str, tier: Tier) -> String {
    format!("values/{release}.{}.yaml", tier.as_str())
}

/// File name of a release's overlay in `[bundle] values_dir`.
pub fn user_overlay_name(release: &str) -> String {
    format!("{release}.yaml")
}

/// The merged values for a release on a tier (then the user's overlay), as YAML text.
pub fn merged(bundle: &Bundle, release: &str, tier: Tier, user: Option<&str>) -> Result<String> {
    let common = bundle.text(&common_path(release))?;
    let mut v: Value = serde_yaml_ng::from_str(common).with_context(|| common_path(release))?;
    if v.is_null() {
        v = Value::Mapping(Mapping::new());
    }
    let ov = overlay_path(release, tier);
    if let Ok(text) = bundle.text(&ov) {
        let o: Value = serde_yaml_ng::from_str(text).with_context(|| ov.clone())?;
        merge(&mut v, o);
    }
    if let Some(text) = user {
        // The overlay is the user's own file: name it, with the YAML
        // error's line and column (from serde_yaml_ng's message).
        let file = user_overlay_name(release);
        let o: Value = serde_yaml_ng::from_str(text).with_context(|| {
            format!("{file} in bundle.values_dir is not valid YAML; correct it at the line shown")
        })?;
        if !o.is_null() && !o.is_mapping() {
            anyhow::bail!("{file} in bundle.values_dir must be a YAML mapping (key: value)");
        }
        if !o.is_null() {
            merge(&mut v, o);
        }
    }
    serde_yaml_ng::to_string(&v).context("serializing values")
}

/// Maps merge key by key; anything else is replaced (lists included), as Helm does.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_merge() {
        let mut a: Value = serde_yaml_ng::from_str("a: {b: 1, c: [1, 2]}\nd: x\n").unwrap();
        let b: Value = serde_yaml_ng::from_str("a: {c: [3], e: true}\n").unwrap();
        merge(&mut a, b);
        let want: Value = serde_yaml_ng::from_str("a: {b: 1, c: [3], e: true}\nd: x\n").unwrap();
        assert_eq!(a, want);
    }

    #[test]
    fn a_broken_user_overlay_names_its_file_and_line() {
        let b = Bundle::embedded().unwrap();
        let e = merged(&b, "loki", Tier::Full, Some("a: 1\nb: [\n")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("loki.yaml in bundle.values_dir"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
    }
}
