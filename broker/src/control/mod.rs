//! BrokerControl: the operator's gRPC API on `KAFSCALE_CONTROL_ADDR` (status,
//! flush, drain, resume; schema in `proto/control/broker.proto`) and the
//! `kafscale-broker ctl` client. The server runs on the tokio I/O runtime, never
//! on a shard; like the HTTP endpoint it reaches the shards through the foreign-job
//! channel into the metadata shard, which fans the work out with `Shard::on_all`.

pub mod cli;
pub mod ops;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kafscale_proto::control::broker_control_server::BrokerControlServer;
use tracing::warn;

use crate::runtime::ForeignTx;
use crate::shard::Shard;
use crate::start_error::{bind_endpoint, BindError, Listener};
use ops::ControlError;

/// What the gRPC service serves from.
pub struct Control {
    broker_id: i32,
    shards: OnceLock<ForeignTx<Shard>>,
}

impl Control {
    pub fn new(broker_id: i32) -> Arc<Self> {
        Arc::new(Control {
            broker_id,
            shards: OnceLock::new(),
        })
    }

    /// Connects the service to the running shards (once they all listen).
    pub fn set_shards(&self, tx: ForeignTx<Shard>) {
        let _ = self.shards.set(tx);
    }

    /// Runs `f` on the metadata shard and returns its result, or an error if the
    /// shards are not running or do not answer within `timeout`.
    async fn on_shards<R, F, Fut>(&self, timeout: Duration, f: F) -> Result<R, tonic::Status>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, ControlError>> + 'static,
        R: Send + 'static,
    {
        let tx = self
            .shards
            .get()
            .ok_or_else(|| tonic::Status::unavailable("the broker is starting"))?;
        match tokio::time::timeout(timeout, crate::runtime::ask(tx, f)).await {
            Ok(Some(r)) => r.map_err(status),
            Ok(None) => Err(tonic::Status::unavailable("the broker is shutting down")),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "the shards did not answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

fn status(e: ControlError) -> tonic::Status {
    match e {
        ControlError::NotFound(m) => tonic::Status::not_found(m),
        ControlError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
        ControlError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
        e @ ControlError::ShardGone(_) => tonic::Status::unavailable(e.to_string()),
        ControlError::Unavailable(m) => tonic::Status::unavailable(m),
    }
}

/// Binds the control port now (so that a taken port fails start-up) and returns
/// the listener to hand to `serve` on the I/O runtime.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    bind_endpoint(Listener::Control, addr)
}

/// Serves BrokerControl until the process ends; spawn on the I/O runtime.
pub async fn serve(listener: std::net::TcpListener, control: Arc<Control>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "control endpoint cannot start");
            return;
        }
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(BrokerControlServer::new(service::Service(control)))
        .serve_with_incoming(incoming)
        .await
    {
        warn!(error = %e, "control endpoint stopped");
    }
}
