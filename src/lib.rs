//! sightline: a host agent that makes a k3s node observable and watched.
//!
//! The pipeline is `facts → decisions (tier, runtime security) → host files
//! → k3s restart → in-cluster stages`. Each stage is a module:
//!
//! | module | concern |
//! |---|---|
//! | [`sysroot`], [`atomic`], [`lock`] | every host path, the one atomic write, the one lock |
//! | [`failpoint`] | named kill points for the sweep tests (`--features failpoints`) |
//! | [`config`] | layered TOML with file:line:col errors |
//! | [`facts`], [`decide`] | what the machine is, and what it gets |
//! | [`host`] | desired host files (audit, watchdog, throttle) |
//! | [`engine`] | plan, apply, state, journal, safe restart, uninstall |
//! | [`systemd`], [`k3s`] | D-Bus client, k3s API client |
//! | [`bundle`], [`rollout`] | the in-cluster stack and its staged rollout |
//! | [`daemon`] | `sightline run` |
//! | [`throttle`] | the Raspberry Pi throttle collector |
//! | [`notify`] | sightline's own notifications when the cluster cannot alert |
//! | [`cli`] | the command line |

pub mod agent;
pub(crate) mod atomic;
pub(crate) mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub(crate) mod decide;
pub mod digest;
pub mod effects;
pub mod engine;
pub(crate) mod error_text;
pub mod facts;
pub mod failpoint;
pub mod host;
pub mod k3s;
pub mod lock;
pub(crate) mod logging;
pub mod notify;
pub mod rollout;
pub mod state;
pub mod sysroot;
pub mod systemd;
pub mod throttle;
