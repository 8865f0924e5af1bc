//! A shard: one pinned core and everything it owns. No locks: the state is in
//! `RefCell`/`Cell`, touched only from this shard's thread, and never borrowed
//! across an `.await`. Other shards reach it only through jobs on the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use kafscale_segstore::{HealthState, Segment, SegmentCache, SegmentStore, StoreStats};

use crate::config::Config;
use crate::groups::Groups;
use crate::http::metrics::{GroupLevels, ShardGauges, ShardMetrics, Snapshot};
use crate::io::Io;
use crate::metadata::{Cluster, MetadataStore};
use crate::partition::Partition;
use crate::runtime::{Job, MeshTx};

/// Key of a segment in the shard's read cache.
pub type SegKey = (Arc<str>, i32, i64);
/// The shard's partitions, by topic then index (looked up by `&str`, no allocation).
pub type PartitionMap = HashMap<Arc<str>, HashMap<i32, Rc<Partition>>>;
/// Readers waiting for a segment GET another reader started.
pub type ReadWaiters =
    HashMap<SegKey, Vec<oneshot::Sender<Result<Segment, crate::errors::KafkaError>>>>;

/// State shared by every shard, built once at start.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub io: Io,
    pub store: SegmentStore,
    pub meta: Arc<dyn MetadataStore>,
    /// Object-store counters and health, fed by the I/O runtime.
    pub store_stats: Arc<StoreStats>,
    /// Fault injection (in-process tests): this shard installs snapshots late.
    pub snapshot_delay: Option<(usize, std::time::Duration)>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not reachable")]
pub struct ShardGone(pub usize);

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub cfg: Arc<Config>,
    pub io: Io,
    pub store: SegmentStore,
    pub meta: Arc<dyn MetadataStore>,
    store_stats: Arc<StoreStats>,
    mesh: MeshTx<Shard>,
    cluster: RefCell<Arc<Cluster>>,
    pub(crate) partitions: RefCell<PartitionMap>,
    pub(crate) cache: RefCell<SegmentCache<SegKey>>,
    /// Segment reads from the store in flight, so concurrent readers share one GET.
    pub(crate) reads_in_flight: RefCell<ReadWaiters>,
    /// Unflushed bytes (active buffers and sealed segments not yet durable).
    pub(crate) buffered: Cell<usize>,
    pub(crate) space_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    pub(crate) upload_slots: Cell<usize>,
    pub(crate) upload_waiters: RefCell<std::collections::VecDeque<oneshot::Sender<()>>>,
    /// Partitions with unflushed data, sealed at the next flush tick.
    pub(crate) dirty: RefCell<Vec<Rc<Partition>>>,
    pub(crate) shutting_down: Cell<bool>,
    /// DrainPartitions for the whole broker: no partition of this shard takes
    /// writes, including ones loaded later, until ResumePartitions.
    pub(crate) draining_all: Cell<bool>,
    pub(crate) in_flight_requests: Cell<usize>,
    /// Serialises topic creation and deletion (used on the metadata shard only).
    pub(crate) admin_lock: futures::lock::Mutex<()>,
    /// The consumer groups hashed to this shard.
    pub(crate) groups: Groups,
    /// This shard's counters, summed over all shards at scrape time.
    pub(crate) metrics: ShardMetrics,
    /// The append order of each partition with produce parts in flight.
    pub(crate) appends: crate::partition::OrderBook,
    /// Requests waiting for this shard to install a newer cluster snapshot.
    revision_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Fault injection (tests): how late this shard installs snapshots.
    snapshot_delay: Option<std::time::Duration>,
}

impl Shard {
    pub fn new(
        id: usize,
        count: usize,
        shared: &Shared,
        mesh: MeshTx<Shard>,
        cluster: Arc<Cluster>,
        groups: Groups,
    ) -> Self {
        let cache_bytes = shared.cfg.cache_bytes / count.max(1);
        Shard {
            id,
            count,
            cfg: shared.cfg.clone(),
            io: shared.io.clone(),
            store: shared.store.clone(),
            meta: shared.meta.clone(),
            store_stats: shared.store_stats.clone(),
            mesh,
            cluster: RefCell::new(cluster),
            partitions: RefCell::new(HashMap::new()),
            cache: RefCell::new(SegmentCache::new(cache_bytes)),
            reads_in_flight: RefCell::new(HashMap::new()),
            buffered: Cell::new(0),
            space_waiters: RefCell::new(Vec::new()),
            upload_slots: Cell::new(shared.cfg.upload_concurrency),
            upload_waiters: RefCell::new(Default::default()),
            dirty: RefCell::new(Vec::new()),
            shutting_down: Cell::new(false),
            draining_all: Cell::new(false),
            in_flight_requests: Cell::new(0),
            admin_lock: futures::lock::Mutex::new(()),
            groups,
            metrics: ShardMetrics::new(shared.cfg.throughput_window_sec),
            appends: Default::default(),
            revision_waiters: RefCell::new(Vec::new()),
            snapshot_delay: shared
                .snapshot_delay
                .filter(|(shard, _)| *shard == id)
                .map(|(_, d)| d),
        }
    }

    /// The object store's health: one relaxed atomic load, cheap enough for every
    /// produce request.
    pub fn store_health(&self) -> HealthState {
        self.store_stats.health.state()
    }

    /// This shard's counters and current levels, for /metrics.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let mut partitions = Vec::new();
        let (mut pending_segments, mut pending_bytes) = (0, 0);
        for parts in self.partitions.borrow().values() {
            for p in parts.values() {
                if let Some((levels, segments, bytes)) = p.levels() {
                    partitions.push(levels);
                    pending_segments += segments;
                    pending_bytes += bytes;
                }
            }
        }
        let groups = self
            .groups
            .all()
            .into_iter()
            .filter(|slot| slot.exists())
            .map(|slot| GroupLevels {
                group: slot.id.clone(),
                members: slot.group.borrow().members.len() as u64,
                committed: slot
                    .offsets
                    .borrow()
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, o.offset))
                    .collect(),
            })
            .collect();
        let gauges = ShardGauges {
            shard: self.id,
            buffered_bytes: self.buffered.get() as u64,
            upload_queue: self.upload_waiters.borrow().len() as u64,
            uploads_in_flight: self
                .cfg
                .upload_concurrency
                .saturating_sub(self.upload_slots.get()) as u64,
            pending_segments,
            pending_bytes,
        };
        self.metrics.snapshot(gauges, partitions, groups)
    }

    /// This shard's current view of the cluster.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.cluster.borrow().clone()
    }

    /// Runs `f` on shard `target` with that shard's state and returns its result.
    /// This is the only way work crosses cores.
    ///
    /// `f` is called (not yet awaited) in the order calls reach the target: at
    /// once when the target is this shard, else when the target takes the job from
    /// its inbox, which keeps the order in which one shard sent its jobs. So the
    /// synchronous part of `f` (taking a partition's append ticket) happens in
    /// the order `on` was called from one shard; the produce path relies on it.
    pub fn on<R, F, Fut>(
        self: &Rc<Self>,
        target: usize,
        f: F,
    ) -> impl Future<Output = Result<R, ShardGone>> + 'static
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        use futures::future::Either;
        if target == self.id {
            let fut = f(self.clone());
            return Either::Left(async move { Ok(fut.await) });
        }
        let (tx, rx) = oneshot::channel();
        let job: Job<Shard> = Box::new(move |sh| {
            let fut = f(sh);
            Box::pin(async move {
                let _ = tx.send(fut.await);
            })
        });
        let sent = self.mesh.send(target, job);
        Either::Right(async move {
            sent.map_err(|_| ShardGone(target))?;
            rx.await.map_err(|_| ShardGone(target))
        })
    }

    /// Resolves when this shard's cluster snapshot is at least at `revision`, or
    /// at the deadline (false). A request routed here by a shard that already
    /// installed a newer snapshot (a topic just created) waits for it here
    /// instead of answering UNKNOWN_TOPIC_OR_PARTITION for a topic the client was
    /// told exists.
    pub(crate) async fn wait_revision(&self, revision: i64, deadline: std::time::Instant) -> bool {
        wait_until(deadline, &self.revision_waiters, || {
            self.cluster.borrow().revision >= revision
        })
        .await
    }

    /// Runs `f` on every shard (this one included) and collects the results in
    /// shard order.
    pub async fn on_all<R, F, Fut>(self: &Rc<Self>, f: F) -> Vec<Result<R, ShardGone>>
    where
        F: Fn(Rc<Shard>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let calls = (0..self.count).map(|i| {
            let f = f.clone();
            async move { self.on(i, f).await }
        });
        futures::future::join_all(calls).await
    }

    /// Installs a new cluster snapshot on this shard and drops the partitions of
    /// topics that no longer exist (or were re-created with a new id).
    pub async fn apply_cluster(self: &Rc<Self>, next: Arc<Cluster>) {
        if let Some(d) = self.snapshot_delay {
            crate::runtime::sleep(d).await;
        }
        let gone: Vec<Rc<Partition>> = {
            let mut topics = self.partitions.borrow_mut();
            let mut gone = Vec::new();
            topics.retain(|name, parts| {
                let keep = |p: &Rc<Partition>| match next.topic(name) {
                    Some(t) => t.id == p.topic_id && p.index < t.partitions,
                    None => false,
                };
                parts.retain(|_, p| {
                    let k = keep(p);
                    if !k {
                        gone.push(p.clone());
                    }
                    k
                });
                !parts.is_empty()
            });
            gone
        };
        // Partitions that stay pick up their topic's current configs (segment.bytes,
        // retention), so an AlterConfigs applies without a restart.
        for (name, parts) in self.partitions.borrow().iter() {
            if let Some(t) = next.topic(name) {
                let settings = t.settings(self.cfg.segment_bytes);
                for p in parts.values() {
                    p.settings.set(settings);
                }
            }
        }
        *self.cluster.borrow_mut() = next;
        for w in self.revision_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
        for p in &gone {
            let released = p.mark_deleted();
            self.release_buffered(released);
            let topic = p.topic.clone();
            let index = p.index;
            self.cache
                .borrow_mut()
                .remove_where(|k| k.0 == topic && k.1 == index);
        }
        // Wait until no upload of a dropped partition is still writing objects, so
        // that the caller can delete the topic's objects without racing a PUT.
        for p in gone {
            p.uploads_idle().await;
        }
    }

    /// Adds to the shard's unflushed byte count.
    pub(crate) fn add_buffered(&self, n: usize) {
        self.buffered.set(self.buffered.get() + n);
    }

    pub(crate) fn release_buffered(&self, n: usize) {
        self.buffered.set(self.buffered.get().saturating_sub(n));
        if n > 0 {
            for w in self.space_waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Waits until the shard has room for `n` more unflushed bytes, up to the
    /// deadline. False means the store is not keeping up: the producer gets a
    /// retriable error rather than the broker growing without bound.
    pub(crate) async fn reserve_space(&self, n: usize, deadline: std::time::Instant) -> bool {
        wait_until(deadline, &self.space_waiters, || {
            self.buffered.get() + n <= self.cfg.max_buffered_bytes || self.buffered.get() == 0
        })
        .await
    }

    /// Takes one of the shard's upload slots, waiting for one to free up.
    pub(crate) async fn upload_slot(&self) -> UploadSlot<'_> {
        loop {
            let free = self.upload_slots.get();
            if free > 0 {
                self.upload_slots.set(free - 1);
                return UploadSlot { shard: self };
            }
            let (tx, rx) = oneshot::channel();
            self.upload_waiters.borrow_mut().push_back(tx);
            let _ = rx.await;
        }
    }
}

/// Waits until `ready()` holds (true) or the deadline passes (false), checking
/// again each time a sender pushed onto `waiters` is fired.
async fn wait_until(
    deadline: std::time::Instant,
    waiters: &RefCell<Vec<oneshot::Sender<()>>>,
    ready: impl Fn() -> bool,
) -> bool {
    loop {
        if ready() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        waiters.borrow_mut().push(tx);
        let timeout = crate::runtime::sleep(deadline - now);
        futures::pin_mut!(timeout);
        let _ = futures::future::select(rx, timeout).await;
    }
}

/// A held upload slot; returned to the shard on drop.
pub(crate) struct UploadSlot<'a> {
    shard: &'a Shard,
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.shard
            .upload_slots
            .set(self.shard.upload_slots.get() + 1);
        if let Some(w) = self.shard.upload_waiters.borrow_mut().pop_front() {
            let _ = w.send(());
        }
    }
}
