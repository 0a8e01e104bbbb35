//! Talking to k3s: the API server over TLS with the admin client
//! certificate, read-only apart from what the design needs (the Lease, the
//! cluster ConfigMap and Secret, and this node's BTF annotation).

pub mod api;
pub(crate) mod configmap;
pub(crate) mod helmchart;
pub mod lease;
pub(crate) mod nodes;
pub(crate) mod version;

pub use api::{ApiError, K3sApi};
pub use version::{K3sVersion, TooOld};
