//! The in-cluster stack: a checksummed bundle of manifests and Helm values,
//! an index of stages, and the rendering of each stage file.

pub mod alertmanager;
pub mod archive;
pub mod chart_pods;
pub mod dashboards;
pub mod fit;
pub mod footprint;
pub mod generated;
pub mod index;
pub mod render;
pub mod secrets;
pub mod uptime_kuma;
pub mod values;

pub use archive::Bundle;
pub use index::Index;
pub use render::{RenderedStage, StageInputs, render_stages};
