//! sightline's configuration: TOML, layered like systemd drop-ins.
//!
//! The main file is merged first, then `config.d/*.toml` drop-ins from
//! `/usr/lib`, `/run` and `/etc` in lexical order of file name. Every value
//! remembers the file and line it came from, so errors point at the line to
//! fix and `sightline config` can say where each value was set.

mod diag;
pub mod doc;
mod follow;
mod load;
mod model;
mod validate;

pub use diag::{ConfigError, Origin};
pub use load::{DROPIN_DIRS, LoadedConfig, MAIN_FILE, Source, load};
pub use model::*;
