//! What can stop a broker from starting (or from stopping cleanly): `StartError`,
//! returned by `run`, `Broker::start` and `Broker::shutdown`, and `BindError`, a
//! listener that could not be bound, which every endpoint shares.
//!
//! A variant that wraps another error returns it as its `source()`, and its
//! `Display` text already ends with (or is) that error's text: these are the
//! messages the binary has always printed, which tests and operators match. So
//! print `{e}`, not the source chain, which would repeat it.

use std::io;
use std::net::{SocketAddr, TcpListener};

use kafscale_segstore::StoreError;

use crate::metadata::MetaError;
use crate::runtime::PreflightError;

/// Why a broker did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The machine cannot run the shards (io_uring, locked memory).
    #[error("{0}")]
    Preflight(#[from] PreflightError),
    /// A listener (the Kafka port, the HTTP or the control endpoint) could not be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("starting the I/O runtime: {0}")]
    IoRuntime(#[source] io::Error),
    /// The object store the settings describe could not be built.
    #[error("object store: {0}")]
    ObjectStore(#[source] StoreError),
    /// The embedded metadata store (in the data directory) could not be opened.
    #[error("metadata store: {0}")]
    MetadataStore(#[source] MetaError),
    #[error("connecting to etcd at {endpoints}: {source}")]
    EtcdConnect {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        source: MetaError,
    },
    #[error("loading metadata: {0}")]
    LoadMetadata(#[source] MetaError),
    #[error("loading consumer groups: {0}")]
    LoadGroups(#[source] MetaError),
    #[error("replaying the commit log: {0}")]
    CommitLog(#[source] crate::partition::ReplayError),
    /// The shard mesh came out empty (not expected: there is at least one shard).
    #[error("no shards")]
    NoShards,
    /// The thread that runs the shard executors could not be started.
    #[error("{0}")]
    ShardThread(#[source] io::Error),
    /// The shard executors failed (one could not start, or one failed to join).
    #[error("{0}")]
    ShardRuntime(#[source] io::Error),
    #[error("a shard panicked")]
    ShardPanicked,
    /// A listener, TLS or SASL setting the broker cannot run with.
    #[error("{0}")]
    Security(#[from] crate::security::SecurityError),
    /// The security records (SCRAM credentials) could not be read or written.
    #[error("security records: {0}")]
    SecurityRecords(#[source] MetaError),
}

/// Which listener a `BindError` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The Kafka port (`KAFSCALE_BROKER_ADDR`), bound by every shard.
    Kafka,
    /// The HTTP endpoint (`KAFSCALE_METRICS_ADDR`).
    Metrics,
    /// The BrokerControl endpoint (`KAFSCALE_CONTROL_ADDR`).
    Control,
}

impl Listener {
    /// How "binding ..." names it; the Kafka port is named by its address alone.
    fn binding(self) -> &'static str {
        match self {
            Listener::Kafka => "",
            Listener::Metrics => "the metrics endpoint ",
            Listener::Control => "the control endpoint ",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Listener::Kafka => "Kafka listener",
            Listener::Metrics => "metrics endpoint",
            Listener::Control => "control endpoint",
        }
    }
}

/// A listener that could not be set up, with its address.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address could not be bound (taken, not local, not permitted).
    #[error("binding {}{addr}: {source}", .listener.binding())]
    Bind {
        listener: Listener,
        addr: SocketAddr,
        source: io::Error,
    },
    /// The bound socket could not be made non-blocking.
    #[error("{} {addr}: {source}", .listener.name())]
    Nonblocking {
        listener: Listener,
        addr: SocketAddr,
        source: io::Error,
    },
}

impl BindError {
    pub fn bind(listener: Listener, addr: SocketAddr, source: io::Error) -> Self {
        BindError::Bind {
            listener,
            addr,
            source,
        }
    }

    /// The underlying I/O error (`AddrInUse` for a taken port).
    pub fn io(&self) -> &io::Error {
        match self {
            BindError::Bind { source, .. } | BindError::Nonblocking { source, .. } => source,
        }
    }
}

/// Binds an endpoint served on the I/O runtime (HTTP, BrokerControl) now, so
/// that a taken port fails start-up, and returns the non-blocking listener to
/// hand to tokio.
pub(crate) fn bind_endpoint(
    listener: Listener,
    addr: SocketAddr,
) -> Result<TcpListener, BindError> {
    let l = TcpListener::bind(addr).map_err(|source| BindError::bind(listener, addr, source))?;
    l.set_nonblocking(true)
        .map_err(|source| BindError::Nonblocking {
            listener,
            addr,
            source,
        })?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken() -> io::Error {
        io::Error::from(io::ErrorKind::AddrInUse)
    }

    #[test]
    fn bind_errors_read_as_before() {
        let addr: SocketAddr = "127.0.0.1:9092".parse().unwrap();
        let e = taken();
        let kafka = BindError::bind(Listener::Kafka, addr, taken());
        assert_eq!(kafka.to_string(), format!("binding 127.0.0.1:9092: {e}"));
        assert_eq!(
            BindError::bind(Listener::Metrics, addr, taken()).to_string(),
            format!("binding the metrics endpoint 127.0.0.1:9092: {e}")
        );
        assert_eq!(
            BindError::bind(Listener::Control, addr, taken()).to_string(),
            format!("binding the control endpoint 127.0.0.1:9092: {e}")
        );
        let nb = BindError::Nonblocking {
            listener: Listener::Control,
            addr,
            source: taken(),
        };
        assert_eq!(
            nb.to_string(),
            format!("control endpoint 127.0.0.1:9092: {e}")
        );
        // The start-up error reads as the bind error, and keeps it as its cause.
        let start = StartError::from(kafka);
        assert_eq!(start.to_string(), format!("binding 127.0.0.1:9092: {e}"));
        assert!(matches!(
            start,
            StartError::Bind(ref b) if b.io().kind() == io::ErrorKind::AddrInUse
        ));
    }

    #[test]
    fn preflight_errors_read_as_before() {
        let e = StartError::from(PreflightError::Memlock {
            limit: 64 << 10,
            need: 1024 << 10,
            shards: 2,
        });
        assert_eq!(
            e.to_string(),
            "RLIMIT_MEMLOCK is 64 KiB but 2 shard(s) need 1024 KiB: raise it (`ulimit -l 1024`, or memlock in the pod's security settings) or lower KAFSCALE_SHARDS"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_taken_endpoint_port_is_a_bind_error() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = bind_endpoint(Listener::Metrics, addr).unwrap_err();
        assert!(
            matches!(e, BindError::Bind { listener: Listener::Metrics, addr: a, .. } if a == addr)
        );
        assert_eq!(e.io().kind(), io::ErrorKind::AddrInUse);
        assert!(e
            .to_string()
            .starts_with(&format!("binding the metrics endpoint {addr}: ")));
    }
}
