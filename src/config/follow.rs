//! Settings whose default is "wherever this node's k3s really is".

use tracing::info;

use super::diag::Origin;
use super::load::LoadedConfig;
use super::model::{K3sConfig, PathsConfig};
use crate::facts::{K3s, K3sRole};

impl LoadedConfig {
    /// Points `paths.k3s_audit_dropin` and `k3s.unit`, when no file sets
    /// them, at the k3s detected on this node: the drop-in goes into the
    /// `.d` directory of the config file k3s reads (`K3S_CONFIG_FILE`,
    /// `--config`, or its default), the restart goes to the unit that runs
    /// it (`k3s-NAME.service` for `INSTALL_K3S_NAME` installs). A value set
    /// in a file stays authoritative. Call it once, after detection and
    /// before anything uses the config.
    pub fn follow_k3s(&mut self, k3s: &K3s) {
        if k3s.role != K3sRole::Server {
            return;
        }
        // A remote config has no local drop-in directory to follow; the host
        // layer warns about it instead.
        if self.origin("paths.k3s_audit_dropin") == Origin::Default && !k3s.config.is_remote() {
            let followed = k3s.dropin_path(&PathsConfig::default().k3s_audit_dropin);
            if followed != self.config.paths.k3s_audit_dropin {
                info!(dropin = %followed, config = %k3s.config.file, source = %k3s.config.source, "audit drop-in follows the k3s config file");
                self.config.paths.k3s_audit_dropin = followed;
            }
        }
        if self.origin("k3s.unit") == Origin::Default
            && let Some(unit) = &k3s.unit
            && *unit != self.config.k3s.unit
        {
            info!(unit = %unit, default = %K3sConfig::default().unit, "k3s unit follows the detected unit");
            self.config.k3s.unit = unit.clone();
        }
    }
}
