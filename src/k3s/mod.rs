//! Talking to k3s: the API server over TLS with the admin client
//! certificate, read-only apart from what the design needs (the Lease, the
//! cluster ConfigMap and Secret, and this node's BTF annotation).

pub mod api;
pub mod configmap;
pub mod helmchart;
pub mod lease;
pub mod nodes;
pub mod version;

pub use api::{ApiError, K3sApi};
pub use version::{K3sVersion, TooOld};
