//! The HTTP endpoint on `KAFSCALE_METRICS_ADDR`: Prometheus `/metrics`, liveness
//! `/healthz`, readiness `/readyz` and the console `/ui/`. It runs on the tokio I/O runtime, never on
//! a shard; it reaches the shards through one foreign-job channel into the
//! metadata shard, which collects every shard's counters with `Shard::on_all`,
//! except `/healthz`, which asks every shard through its own inbox (a stuck
//! metadata shard must not hide the others' answers).

pub mod console;
pub mod health;
pub mod metrics;
pub mod server;

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kafscale_segstore::{SegmentStore, StoreError, StoreStats};

use crate::runtime::ForeignTx;
use crate::shard::Shard;
use metrics::Snapshot;

/// How long a scrape or readiness check waits for the shards to answer.
const SHARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the shards gave the endpoint no answer (the text ends up in a 503 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardsError {
    /// Start-up has not connected the endpoint to the shards yet.
    #[error("shards not started")]
    NotStarted,
    /// The metadata shard's inbox is closed: the broker is stopping.
    #[error("shards stopped")]
    Stopped,
    #[error("shards did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The metadata shard answered, but these shards did not answer it.
    #[error("shards {0:?} did not answer")]
    Missing(Vec<usize>),
}

/// Why `/metrics` has no body.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0}")]
    Shards(#[from] ShardsError),
    #[error("encoding the metrics failed")]
    Encode(#[source] std::fmt::Error),
}

/// Why the last object-store probe failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    /// The LIST failed (shared: the outcome is kept and cloned for every reader).
    #[error("{0}")]
    Store(#[source] Arc<StoreError>),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// What the endpoint serves from; shared by its connections and the store probe.
pub struct Endpoint {
    pub stats: Arc<StoreStats>,
    pub store: SegmentStore,
    metadata_loaded: AtomicBool,
    shards: OnceLock<ForeignTx<Shard>>,
    /// Every shard's inbox, by shard id (for `/healthz`).
    inboxes: OnceLock<Vec<ForeignTx<Shard>>>,
    /// Outcome of the last object-store probe (`None` before the first one ends).
    store_status: Mutex<Option<Result<(), ProbeError>>>,
    started: std::time::Instant,
}

impl Endpoint {
    pub fn new(stats: Arc<StoreStats>, store: SegmentStore) -> Arc<Self> {
        Arc::new(Endpoint {
            stats,
            store,
            metadata_loaded: AtomicBool::new(false),
            shards: OnceLock::new(),
            inboxes: OnceLock::new(),
            store_status: Mutex::new(None),
            started: std::time::Instant::now(),
        })
    }

    pub fn set_metadata_loaded(&self) {
        self.metadata_loaded.store(true, Ordering::Release);
    }

    /// Connects the endpoint to the running shards (once they all listen):
    /// the metadata shard's inbox and every shard's, by shard id.
    pub fn set_shards(&self, metadata: ForeignTx<Shard>, all: Vec<ForeignTx<Shard>>) {
        let _ = self.shards.set(metadata);
        let _ = self.inboxes.set(all);
    }

    /// The /metrics body: every shard's counters and levels, the object store's
    /// counters and health.
    pub async fn metrics_text(&self) -> Result<String, MetricsError> {
        let shards = self.snapshot().await?;
        metrics::render(
            shards,
            self.stats.snapshot(),
            self.stats.health.snapshot(),
            self.started.elapsed(),
        )
        .map_err(MetricsError::Encode)
    }

    /// The outcome of the last object-store probe (`None` before the first one ends).
    pub fn store_probe(&self) -> Option<Result<(), ProbeError>> {
        match self.store_status.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Runs `f` on the metadata shard (which reaches the others with
    /// `Shard::on_all`) and returns its result; an error says what did not answer.
    pub async fn on_shards<R, F, Fut>(&self, f: F) -> Result<R, ShardsError>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let tx = self.shards.get().ok_or(ShardsError::NotStarted)?;
        match tokio::time::timeout(SHARD_TIMEOUT, crate::runtime::ask(tx, f)).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(ShardsError::Stopped),
            Err(_) => Err(ShardsError::Timeout(SHARD_TIMEOUT)),
        }
    }

    /// Every shard's counters, summed; an error names what did not answer.
    pub async fn snapshot(&self) -> Result<Snapshot, ShardsError> {
        self.on_shards(|sh| async move {
            let parts = sh.on_all(|s| async move { s.metrics_snapshot() }).await;
            let mut total = Snapshot::default();
            let mut missing = Vec::new();
            for (i, p) in parts.into_iter().enumerate() {
                match p {
                    Ok(s) => total.merge(s),
                    Err(_) => missing.push(i),
                }
            }
            if missing.is_empty() {
                Ok(total)
            } else {
                Err(ShardsError::Missing(missing))
            }
        })
        .await?
    }
}
