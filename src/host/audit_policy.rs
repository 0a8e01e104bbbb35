//! Validation of audit.k8s.io/v1 Policy documents, following the apiserver's
//! own rules (k8s.io/apiserver/pkg/apis/audit/validation), so a policy that
//! would crash-loop k3s is refused before it is written.

use serde::Deserialize;

/// Audit levels, least to most verbose.
const LEVELS: [&str; 4] = ["None", "Metadata", "Request", "RequestResponse"];
/// Stages that can be omitted.
const STAGES: [&str; 4] = [
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Policy {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<serde_yaml_ng::Value>,
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    level: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// Summary of a valid policy, for tests and `plan` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySummary {
    /// Number of rules.
    pub rules: usize,
    /// Levels in rule order.
    pub levels: Vec<String>,
}

/// Checks that `text` is a valid audit.k8s.io/v1 Policy.
pub fn validate_policy(text: &str) -> Result<PolicySummary, String> {
    let p: Policy =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not a valid audit policy: {e}"))?;
    let _ = (&p.metadata, p.omit_managed_fields);
    if p.api_version != "audit.k8s.io/v1" {
        return Err(format!(
            "apiVersion is {:?}; k3s's apiserver wants \"audit.k8s.io/v1\"",
            p.api_version
        ));
    }
    if p.kind != "Policy" {
        return Err(format!("kind is {:?}; expected \"Policy\"", p.kind));
    }
    if p.rules.is_empty() {
        return Err("rules is empty; the apiserver refuses a policy without rules".into());
    }
    check_stages(&p.omit_stages, "omitStages")?;
    for (i, r) in p.rules.iter().enumerate() {
        let at = |m: String| format!("rules[{i}]: {m}");
        let _ = (&r.users, &r.user_groups, &r.verbs, r.omit_managed_fields);
        if !LEVELS.contains(&r.level.as_str()) {
            return Err(at(format!("level {:?} is not one of {LEVELS:?}", r.level)));
        }
        check_stages(&r.omit_stages, "omitStages").map_err(at)?;
        if !r.non_resource_urls.is_empty() && (!r.resources.is_empty() || !r.namespaces.is_empty())
        {
            return Err(at(
                "rules cannot apply to both regular resources and non-resource URLs".into(),
            ));
        }
        for url in &r.non_resource_urls {
            if !url.starts_with('/') && url != "*" {
                return Err(at(format!("non-resource URL {url:?} must start with '/'")));
            }
            if url.trim_end_matches('*').contains('*') {
                return Err(at(format!(
                    "non-resource URL {url:?} may only have '*' at the end"
                )));
            }
        }
        for gr in &r.resources {
            if gr.group.contains('/') {
                return Err(at(format!("group {:?} must not contain '/'", gr.group)));
            }
            if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                return Err(at("resourceNames needs at least one resource".into()));
            }
            for res in &gr.resources {
                if res.is_empty() {
                    return Err(at("empty resource name".into()));
                }
                if res.contains('*')
                    && !(res == "*" || res.starts_with("*/") || res.ends_with("/*"))
                {
                    return Err(at(format!(
                        "resource {res:?} uses '*' other than as a whole segment"
                    )));
                }
            }
        }
    }
    Ok(PolicySummary {
        rules: p.rules.len(),
        levels: p.rules.iter().map(|r| r.level.clone()).collect(),
    })
}

fn check_stages(stages: &[String], what: &str) -> Result<(), String> {
    for s in stages {
        if !STAGES.contains(&s.as_str()) {
            return Err(format!("{what}: {s:?} is not one of {STAGES:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policy_is_valid() {
        let s = validate_policy(super::super::audit::BUILTIN_POLICY).unwrap();
        assert_eq!(s.levels.last().map(String::as_str), Some("Metadata"));
    }

    #[test]
    fn rejects_bad_policies() {
        let cases = [
            (
                "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: Metadata}]\n",
                "apiVersion",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
                "without rules",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n",
                "level",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: ['/a*b']}]\n",
                "'*'",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: ['/x'], resources: [{resources: [pods]}]}]\n",
                "both",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, bogus: 1}]\n",
                "bogus",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Sometimes]\nrules: [{level: None}]\n",
                "Sometimes",
            ),
            ("{{{", "not a valid"),
        ];
        for (text, needle) in cases {
            let e = validate_policy(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
