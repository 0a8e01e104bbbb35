//! Fields of helm-controller's HelmChart that sightline sets.

use serde::{Deserialize, Serialize};

/// `spec.failurePolicy`: what klipper-helm does when the release it is
/// asked to upgrade is in status failed, deleted or unknown (klipper-helm
/// `entry`; the enum is helm-controller `pkg/apis/helm.cattle.io/v1/types.go`,
/// abort and reinstall since v0.12.0, retry since v0.17.6; the CRD
/// defaults to reinstall).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Exit 1 and wait for an operator; the release and its data stay.
    Abort,
    /// `helm uninstall --wait`, then install again (the default).
    Reinstall,
    /// Upgrade again (helm-controller v0.17.6 and later only).
    Retry,
}
