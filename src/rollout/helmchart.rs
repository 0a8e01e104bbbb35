//! Whether a new HelmChart asks helm-controller for a new install Job.
//!
//! helm-controller builds the install Job, its values Secret and its content
//! ConfigMap from the HelmChart's name and `spec` alone (`chart.go` `job()`,
//! `valuesSecret()`, `contentConfigMap()`, v0.16.0 to v0.17.7), and replaces
//! the Job only when that template or its config hash changes
//! (`templateChanged`/`reconcileJob`; v0.16.0: `jobPatcher`). Labels,
//! annotations and comments never give a new Job, so sightline waits for a
//! replacement only when the spec differs from the one in the cluster.

use serde_json::Value;

/// Defaults the apiserver writes into a stored HelmChart's spec from the
/// CRD schema (helm-controller `pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml`,
/// v0.16.26 and v0.17.7: `failurePolicy: reinstall`, `driver: secret`). A
/// rendered spec that leaves them out asks for the same Job.
const CRD_DEFAULTS: [(&str, &str); 2] = [("failurePolicy", "reinstall"), ("driver", "secret")];

/// The `spec` of the HelmChart document in a stage file, if it has one.
pub fn desired_spec(content: &[u8]) -> Option<Value> {
    super::docs(content)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("HelmChart"))
        .map(|d| d["spec"].clone())
}

/// True when writing `desired` over the live HelmChart's `spec` makes
/// helm-controller replace the install Job.
pub fn spec_changed(live: &Value, desired: &Value) -> bool {
    let (Some(live), Some(desired)) = (live.as_object(), desired.as_object()) else {
        return live != desired;
    };
    let keys = live.keys().chain(desired.keys());
    for k in keys {
        let same = match (live.get(k), desired.get(k)) {
            (Some(l), Some(d)) => l == d,
            (Some(l), None) => CRD_DEFAULTS
                .iter()
                .any(|(dk, dv)| dk == k && l.as_str() == Some(dv)),
            (None, Some(d)) => d.is_null(),
            (None, None) => true,
        };
        if !same {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_spec_counts_and_crd_defaults_are_no_change() {
        let desired = json!({"chart": "loki", "version": "1.0.0", "valuesContent": "a: 1"});
        let mut live = desired.clone();
        live["failurePolicy"] = json!("reinstall");
        live["driver"] = json!("secret");
        assert!(!spec_changed(&live, &desired));
        live["failurePolicy"] = json!("abort");
        assert!(
            spec_changed(&live, &desired),
            "a non-default value is a change"
        );
        let mut newer = desired.clone();
        newer["valuesContent"] = json!("a: 2");
        assert!(spec_changed(&desired, &newer));
        let file = b"# c\n---\nkind: Namespace\n---\nkind: HelmChart\nmetadata:\n  labels: {a: b}\nspec:\n  chart: loki\n";
        let relabelled = b"kind: HelmChart\nmetadata:\n  labels: {a: c}\nspec:\n  chart: loki\n";
        assert_eq!(
            desired_spec(file),
            desired_spec(relabelled),
            "labels and comments are not the spec"
        );
    }
}
