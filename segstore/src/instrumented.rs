//! Counts object-store requests and errors by operation for the broker's
//! /metrics endpoint. It wraps the store the same way `FaultyStore` does, so every
//! call site is counted without touching it. The counters are atomics: object-store
//! calls run on the I/O runtime's threads, never on a shard's hot path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The operations counted, in the order of `StoreStats::snapshot`.
pub const STORE_OPS: [&str; 4] = ["put", "get", "list", "delete"];

#[derive(Debug, Default)]
struct OpCounter {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl OpCounter {
    /// Counts a request as it starts; the guard counts an error unless the request
    /// finishes with `Ok`, so a request abandoned mid-way (a caller's timeout, as in
    /// the readiness probe against a store that does not answer) is an error too.
    fn start(&self) -> Pending<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Pending {
            counter: self,
            ok: false,
        }
    }
}

struct Pending<'a> {
    counter: &'a OpCounter,
    ok: bool,
}

impl Pending<'_> {
    fn finish<T>(mut self, r: object_store::Result<T>) -> object_store::Result<T> {
        self.ok = r.is_ok();
        r
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.ok {
            self.counter.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Request and error counts per operation, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct StoreStats {
    ops: [OpCounter; 4],
}

impl StoreStats {
    /// `(operation, requests, errors)` for every operation in `STORE_OPS`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        STORE_OPS
            .iter()
            .zip(self.ops.iter())
            .map(|(name, c)| {
                (
                    *name,
                    c.requests.load(Ordering::Relaxed),
                    c.errors.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
    fn put(&self) -> &OpCounter {
        &self.ops[0]
    }
    fn get(&self) -> &OpCounter {
        &self.ops[1]
    }
    fn list(&self) -> &OpCounter {
        &self.ops[2]
    }
    fn delete(&self) -> &OpCounter {
        &self.ops[3]
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
        let pending = self.stats.put().start();
        pending.finish(self.inner.put_opts(location, payload, opts).await)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let pending = self.stats.put().start();
        pending.finish(self.inner.put_multipart_opts(location, opts).await)
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let pending = self.stats.get().start();
        pending.finish(self.inner.get_opts(location, options).await)
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        let pending = self.stats.delete().start();
        pending.finish(self.inner.delete(location).await)
    }
    /// A listing counts once, when it starts; an error while it streams counts once too.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let stats = self.stats.clone();
        stats.list().requests.fetch_add(1, Ordering::Relaxed);
        self.inner
            .list(prefix)
            .map(move |item| {
                if item.is_err() {
                    stats.list().errors.fetch_add(1, Ordering::Relaxed);
                }
                item
            })
            .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let pending = self.stats.list().start();
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
        assert_eq!(
            stats.snapshot(),
            vec![
                ("put", 1, 0),
                ("get", 2, 1),
                ("list", 2, 0),
                ("delete", 1, 0)
            ]
        );
    }

    #[tokio::test]
    async fn an_abandoned_request_is_an_error() {
        use crate::faults::{Fault, FaultControl, FaultyStore};
        let hang = FaultControl::Fixed(Arc::new(std::sync::Mutex::new(Fault::PutHang)));
        let stats = Arc::new(StoreStats::default());
        let store = InstrumentedStore::new(
            Arc::new(FaultyStore::new(Arc::new(InMemory::new()), hang)),
            stats.clone(),
        );
        let p = Path::from("x");
        let put = store.put(&p, PutPayload::from_static(b"1"));
        let r = tokio::time::timeout(std::time::Duration::from_millis(100), put).await;
        assert!(r.is_err());
        assert_eq!(stats.snapshot()[0], ("put", 1, 1));
    }
}
