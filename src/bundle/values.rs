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
        let o: Value =
            serde_yaml_ng::from_str(text).context("the values overlay in [bundle] values_dir")?;
        if !o.is_null() && !o.is_mapping() {
            anyhow::bail!("the values overlay for {release} must be a YAML mapping");
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
}
