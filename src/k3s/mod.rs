//! Talking to k3s: the API server over TLS with the admin client
//! certificate, read-only apart from what the design needs.

pub mod api;
pub mod helmchart;
pub mod version;

pub use api::{ApiError, K3sApi};
pub use version::{K3sVersion, TooOld};
