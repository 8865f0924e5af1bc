//! The Kafscale broker as a library: `Broker::start` runs a broker (the binary
//! in `main.rs` is a thin command line around it), so tests can start one or
//! several brokers in their own process. See docs/architecture.md.

mod admission;
mod boot;
pub mod clock;
pub mod config;
mod connection;
pub mod control;
mod errors;
mod groups;
mod handlers;
mod http;
mod io;
mod metadata;
mod obs;
mod partition;
mod placement;
mod router;
mod runtime;
mod security;
pub mod security_config;
mod server;
mod settings;
mod shard;
mod start_error;

pub use boot::{run, Broker, StartOptions};
pub use config::{Config, ConfigError};
pub use metadata::MetaError;
pub use runtime::PreflightError;
pub use security::listeners::ListenerError;
pub use security::tls::TlsError;
pub use security::SecurityError;
pub use start_error::{BindError, Listener, StartError};
