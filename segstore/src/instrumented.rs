//! Counts object-store requests, errors and latency by operation for the
//! broker's /metrics endpoint, and feeds the store's health (`S3Health`). It
//! wraps the store the same way `FaultyStore` does, so every call site is counted
//! without touching it. The counters are atomics: object-store calls run on the
//! I/O runtime's threads, never on a shard's hot path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::health::{HealthConfig, S3Health};

/// The operations counted, in the order of `StoreStats::snapshot`.
pub const STORE_OPS: [&str; 4] = ["put", "get", "list", "delete"];
const PUT: usize = 0;
const GET: usize = 1;
const LIST: usize = 2;
const DELETE: usize = 3;

/// Upper bounds of the object-store latency histogram, in seconds.
pub const STORE_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const NB: usize = STORE_LATENCY_BUCKETS.len();

#[derive(Debug, Default)]
struct OpCounter {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_micros: AtomicU64,
    /// Non-cumulative; the last slot counts requests slower than the largest bound.
    buckets: [AtomicU64; NB + 1],
}

/// An error that is the store's answer, not a failure to reach it: it counts as
/// an error of the operation but not against the store's health.
fn is_answer(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
    )
}

/// One request in progress. Dropped without `finish` (a caller's timeout, as in
/// the readiness probe against a store that does not answer), it counts as a
/// failed request that took as long as it ran.
struct Pending<'a> {
    stats: &'a StoreStats,
    op: usize,
    started: Instant,
    outcome: Option<Result<(), bool>>,
}

impl Pending<'_> {
    fn finish<T>(mut self, r: object_store::Result<T>) -> object_store::Result<T> {
        self.outcome = Some(match &r {
            Ok(_) => Ok(()),
            Err(e) => Err(is_answer(e)),
        });
        r
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let (error, failed) = match self.outcome {
            Some(Ok(())) => (false, false),
            Some(Err(answered)) => (true, !answered),
            None => (true, true),
        };
        self.stats
            .end(self.op, self.started.elapsed(), error, failed);
    }
}

/// Request counts, errors and latency per operation, and the store's health;
/// shared with the metrics endpoint and the shards.
#[derive(Debug, Default)]
pub struct StoreStats {
    ops: [OpCounter; 4],
    pub health: S3Health,
}

/// One operation's counters, for /metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct OpStats {
    pub operation: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub latency_sum: Duration,
    /// Non-cumulative counts per `STORE_LATENCY_BUCKETS` bound, plus one slot for
    /// slower requests.
    pub buckets: Vec<u64>,
}

impl StoreStats {
    pub fn new(health: HealthConfig) -> Self {
        StoreStats {
            ops: Default::default(),
            health: S3Health::new(health),
        }
    }

    /// The counters of every operation in `STORE_OPS` order.
    pub fn snapshot(&self) -> Vec<OpStats> {
        STORE_OPS
            .iter()
            .zip(self.ops.iter())
            .map(|(name, c)| OpStats {
                operation: name,
                requests: c.requests.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                latency_sum: Duration::from_micros(c.latency_micros.load(Ordering::Relaxed)),
                buckets: c
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect(),
            })
            .collect()
    }

    /// Counts a PUT made outside `InstrumentedStore` (the broker's own
    /// io_uring writer of the local directory store), once it ended.
    pub fn record_put(&self, took: Duration, failed: bool) {
        self.ops[PUT].requests.fetch_add(1, Ordering::Relaxed);
        self.end(PUT, took, failed, failed);
    }

    /// Counts a request as it starts.
    fn start(&self, op: usize) -> Pending<'_> {
        self.ops[op].requests.fetch_add(1, Ordering::Relaxed);
        Pending {
            stats: self,
            op,
            started: Instant::now(),
            outcome: None,
        }
    }

    fn end(&self, op: usize, took: Duration, error: bool, failed: bool) {
        let c = &self.ops[op];
        if error {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        c.latency_micros.fetch_add(micros, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let i = STORE_LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(NB);
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.health.record(op, took, failed);
    }
}

/// Times a streamed listing: it ends at its first error, at its end, or when the
/// caller drops it.
struct ListTimer {
    stats: Arc<StoreStats>,
    started: Instant,
    done: bool,
}

impl ListTimer {
    fn end(&mut self, error: Option<bool>) {
        if !self.done {
            self.done = true;
            let failed = error.unwrap_or(false);
            self.stats
                .end(LIST, self.started.elapsed(), error.is_some(), failed);
        }
    }
}

impl Drop for ListTimer {
    fn drop(&mut self) {
        self.end(None);
    }
}

pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, stats: Arc<StoreStats>) -> Self {
        InstrumentedStore { inner, stats }
    }
}

impl fmt::Debug for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstrumentedStore({:?})", self.inner)
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstrumentedStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let pending = self.stats.start(PUT);
        pending.finish(self.inner.put_opts(location, payload, opts).await)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let pending = self.stats.start(PUT);
        pending.finish(self.inner.put_multipart_opts(location, opts).await)
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let pending = self.stats.start(GET);
        pending.finish(self.inner.get_opts(location, options).await)
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        let pending = self.stats.start(DELETE);
        pending.finish(self.inner.delete(location).await)
    }
    /// A listing counts once, when it starts; an error while it streams counts once
    /// too (and ends it, for its latency).
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.stats.ops[LIST]
            .requests
            .fetch_add(1, Ordering::Relaxed);
        let mut timer = ListTimer {
            stats: self.stats.clone(),
            started: Instant::now(),
            done: false,
        };
        self.inner
            .list(prefix)
            .map(move |item| {
                if let Err(e) = &item {
                    timer.end(Some(!is_answer(e)));
                }
                item
            })
            .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let pending = self.stats.start(LIST);
        pending.finish(self.inner.list_with_delimiter(prefix).await)
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn counts_requests_and_errors() {
        let stats = Arc::new(StoreStats::default());
        let store = InstrumentedStore::new(Arc::new(InMemory::new()), stats.clone());
        let p = Path::from("a/x");
        store.put(&p, PutPayload::from_static(b"1")).await.unwrap();
        store.get(&p).await.unwrap();
        assert!(store.get(&Path::from("a/missing")).await.is_err());
        store
            .list_with_delimiter(Some(&Path::from("a")))
            .await
            .unwrap();
        let listed: Vec<_> = store.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 1);
        store.delete(&p).await.unwrap();
        let counts = |stats: &StoreStats| -> Vec<_> {
            stats
                .snapshot()
                .into_iter()
                .map(|o| {
                    (
                        o.operation,
                        o.requests,
                        o.errors,
                        o.buckets.iter().sum::<u64>(),
                    )
                })
                .collect()
        };
        // Every finished request is in exactly one latency bucket.
        assert_eq!(
            counts(&stats),
            vec![
                ("put", 1, 0, 1),
                ("get", 2, 1, 2),
                ("list", 2, 0, 2),
                ("delete", 1, 0, 1)
            ]
        );
        // A missing object is the store's answer: no harm to its health.
        let h = stats.health.snapshot();
        assert_eq!((h.requests, h.error_rate), (6, 0.0));
    }

    #[tokio::test]
    async fn an_abandoned_request_is_an_error() {
        use crate::faults::{Fault, FaultControl, Faults, FaultyStore};
        let hang = FaultControl::Fixed(Arc::new(std::sync::Mutex::new(Faults {
            put: Fault::PutHang,
            ..Faults::default()
        })));
        let stats = Arc::new(StoreStats::default());
        let store = InstrumentedStore::new(
            Arc::new(FaultyStore::new(Arc::new(InMemory::new()), hang)),
            stats.clone(),
        );
        let p = Path::from("x");
        let put = store.put(&p, PutPayload::from_static(b"1"));
        let r = tokio::time::timeout(std::time::Duration::from_millis(100), put).await;
        assert!(r.is_err());
        let put = &stats.snapshot()[0];
        assert_eq!((put.requests, put.errors), (1, 1));
        assert!(put.latency_sum >= std::time::Duration::from_millis(100));
        assert_eq!(stats.health.snapshot().error_rate, 1.0);
    }
}
