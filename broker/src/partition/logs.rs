//! A shard's logs: its partitions and everything their produce, upload and
//! fetch paths share on that core (the segment cache, buffered bytes and the
//! wait for room, upload slots, the flush list, the append order). The state is
//! private to the log layer; the shard above holds one `Logs` and asks it
//! through methods. No locks: it is touched only from its shard's thread.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use kafscale_segstore::{Segment, SegmentCache, SegmentStore};

use super::{OrderBook, Partition};
use crate::clock::Clock;
use crate::errors::KafkaError;
use crate::io::Io;
use crate::metadata::{Cluster, MetadataStore};
use crate::obs::metrics::{PartitionLevels, ShardMetrics};
use crate::runtime::{spawn_detached, wait_until};

/// Key of a segment in the shard's read cache.
/// (topic, partition, base offset, object id: 0 for a plain segment, else a
/// compacted segment's, see `segstore::keys::object_path`).
pub type SegKey = (Arc<str>, i32, i64, u64);
/// The shard's partitions, by topic then index (looked up by `&str`, no allocation).
pub type PartitionMap = HashMap<Arc<str>, HashMap<i32, Rc<Partition>>>;
/// Readers waiting for a segment GET another reader started.
pub type ReadWaiters = HashMap<SegKey, Vec<oneshot::Sender<Result<Segment, KafkaError>>>>;

/// What the log layer reads from the broker's configuration: a plain struct,
/// built from the command line by `Config::log_settings`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Default `segment.bytes` of topics that do not set it.
    pub segment_bytes: usize,
    /// A partition's unflushed data is sealed and uploaded within this long.
    pub flush_interval: Duration,
    /// Group commit seals a partition no sooner than this after its previous
    /// seal (the lower bound on object size for stores that charge per request).
    pub flush_min_interval: Duration,
    /// Segments fetched ahead of a consumer reading from the object store.
    pub readahead_segments: usize,
    pub retention_check_interval: Duration,
    /// Pause between the log cleaner's passes (compacted topics).
    pub cleaner_backoff: Duration,
    /// Unflushed bytes of the whole broker before producers wait for room.
    pub max_buffered_bytes: usize,
    /// Concurrent segment uploads per shard.
    pub upload_concurrency: usize,
    /// Bytes of segments read from the store kept in memory (all shards).
    pub cache_bytes: usize,
    /// An idempotent producer's state is forgotten this long after its last batch.
    pub producer_id_expiration: Duration,
}

impl LogSettings {
    pub fn producer_id_expiration_ms(&self) -> i64 {
        i64::try_from(self.producer_id_expiration.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The handles a shard's logs use: built once per broker, cloned per shard.
#[derive(Clone)]
pub struct LogHandles {
    pub io: Io,
    pub store: SegmentStore,
    pub meta: Arc<dyn MetadataStore>,
    /// The time the flush tick, retention, load waits and buffer waits follow.
    pub clock: Clock,
    /// Set when the local directory store's segments are written on the
    /// shards' own io_uring (KAFSCALE_LOCAL_IO=uring).
    pub local_uring: Option<super::local_uring::LocalUringConfig>,
    /// Set when acks=all commits go through the shards' commit logs
    /// (KAFSCALE_LOCAL_COMMIT=log): the directory of the logs.
    pub commit_log: Option<std::path::PathBuf>,
}

pub struct Logs {
    pub(super) shard: usize,
    pub(super) shards: usize,
    pub(super) settings: LogSettings,
    pub(super) io: Io,
    pub(super) store: SegmentStore,
    pub(super) meta: Arc<dyn MetadataStore>,
    pub(super) clock: Clock,
    /// This shard's writer of the local directory store (KAFSCALE_LOCAL_IO=uring).
    pub(super) local_uring: Option<super::local_uring::LocalUring>,
    /// This shard's commit log (KAFSCALE_LOCAL_COMMIT=log).
    pub(super) clog: Option<super::commit_log::ShardLog>,
    pub(super) metrics: Rc<ShardMetrics>,
    cluster: RefCell<Arc<Cluster>>,
    pub(super) partitions: RefCell<PartitionMap>,
    pub(super) cache: RefCell<SegmentCache<SegKey>>,
    /// Segment reads from the store in flight, so concurrent readers share one GET.
    pub(super) reads_in_flight: RefCell<ReadWaiters>,
    /// Unflushed bytes (active buffers and sealed segments not yet durable).
    buffered: Cell<usize>,
    space_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    upload_slots: Cell<usize>,
    upload_waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
    /// Partitions with unflushed data, sealed at the next flush tick.
    pub(super) dirty: RefCell<Vec<Rc<Partition>>>,
    /// Partitions with data an `acks=-1` producer waits for (group commit).
    pub(super) eager: RefCell<Vec<Rc<Partition>>>,
    /// Set by every wake of the group-commit task, cleared by its passes.
    pub(super) eager_wake: Cell<bool>,
    /// The sleeping group-commit task.
    pub(super) eager_waiter: RefCell<Option<oneshot::Sender<()>>>,
    /// Partitions of this shard whose upload loop runs.
    uploads_running: Cell<usize>,
    shutting_down: Cell<bool>,
    /// DrainPartitions for the whole broker: no partition of this shard takes
    /// writes, including ones loaded later, until ResumePartitions.
    draining_all: Cell<bool>,
    /// The append order of each partition with produce parts in flight.
    appends: OrderBook,
}

/// Gauges of a shard's logs for /metrics and the control API.
pub struct LogLevels {
    pub buffered_bytes: usize,
    pub upload_queue: usize,
    pub uploads_in_flight: usize,
    pub pending_segments: u64,
    pub pending_bytes: u64,
    pub partitions: Vec<PartitionLevels>,
}

impl Logs {
    pub fn new(
        shard: usize,
        shards: usize,
        settings: LogSettings,
        handles: LogHandles,
        metrics: Rc<ShardMetrics>,
        cluster: Arc<Cluster>,
    ) -> Self {
        let cache_bytes = settings.cache_bytes / shards.max(1);
        Logs {
            shard,
            shards,
            upload_slots: Cell::new(settings.upload_concurrency),
            settings,
            io: handles.io,
            store: handles.store,
            meta: handles.meta,
            clock: handles.clock,
            local_uring: handles.local_uring.as_ref().and_then(|c| {
                super::local_uring::LocalUring::new(c)
                    .inspect_err(|e| tracing::warn!(error = %e, "the io_uring writer of the local store is unavailable; using the I/O threads"))
                    .ok()
            }),
            clog: handles.commit_log.as_ref().and_then(|dir| {
                super::commit_log::ShardLog::open(dir, shard)
                    .inspect_err(|e| tracing::error!(dir = %dir.display(), error = %e, "the shard's commit log cannot be opened; this shard writes files per commit"))
                    .ok()
            }),
            metrics,
            cluster: RefCell::new(cluster),
            partitions: RefCell::new(HashMap::new()),
            cache: RefCell::new(SegmentCache::new(cache_bytes)),
            reads_in_flight: RefCell::new(HashMap::new()),
            buffered: Cell::new(0),
            space_waiters: RefCell::new(Vec::new()),
            upload_waiters: RefCell::new(VecDeque::new()),
            dirty: RefCell::new(Vec::new()),
            eager: RefCell::new(Vec::new()),
            eager_wake: Cell::new(false),
            eager_waiter: RefCell::new(None),
            uploads_running: Cell::new(0),
            shutting_down: Cell::new(false),
            draining_all: Cell::new(false),
            appends: OrderBook::default(),
        }
    }

    pub fn store(&self) -> &SegmentStore {
        &self.store
    }

    /// The cluster snapshot these logs follow.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.cluster.borrow().clone()
    }

    /// The partition's append order (see `order.rs`).
    pub fn appends(&self) -> &OrderBook {
        &self.appends
    }

    /// The partitions currently open on this shard.
    pub fn open_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The partition `topic`/`index` if it is open on this shard (loaded or not).
    pub fn open_partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|m| m.get(&index))
            .cloned()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Stops the flush, group-commit and retention loops at their next tick.
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        super::group_commit::wake(self);
    }

    /// Partitions of this shard whose upload loop runs.
    pub(super) fn uploads_running(&self) -> usize {
        self.uploads_running.get()
    }

    /// An upload loop started (true) or ended (false).
    pub(super) fn upload_running(&self, started: bool) {
        let n = self.uploads_running.get();
        self.uploads_running
            .set(if started { n + 1 } else { n.saturating_sub(1) });
    }

    pub fn draining_all(&self) -> bool {
        self.draining_all.get()
    }

    /// Sets the broker-wide drain flag; returns the previous value.
    pub fn set_draining_all(&self, on: bool) -> bool {
        self.draining_all.replace(on)
    }

    /// Installs a new cluster snapshot and drops the partitions of topics that
    /// no longer exist, are being deleted, or were re-created with a new id; their
    /// claims are given back once their uploads are over. The caller awaits
    /// `Dropped::uploads_idle` before deleting the topic's objects, so that no
    /// PUT of a dropped partition races the deletion.
    pub fn install_cluster(self: &Rc<Self>, next: Arc<Cluster>) -> Dropped {
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
        // retention), so an AlterConfigs applies without a restart. Those now
        // assigned to another broker are handed over.
        let mut moved = Vec::new();
        for (name, parts) in self.partitions.borrow().iter() {
            if let Some(t) = next.topic(name) {
                let settings = t.settings(self.settings.segment_bytes);
                for p in parts.values() {
                    p.settings.set(settings);
                    if !next.owns(t, p.index) && !p.st.borrow().releasing {
                        p.st.borrow_mut().releasing = true;
                        moved.push(p.clone());
                    }
                }
            }
        }
        for p in moved {
            spawn_detached(release(self.clone(), p));
        }
        *self.cluster.borrow_mut() = next;
        for p in &gone {
            let (released, logged) = p.mark_deleted();
            self.release_buffered(released);
            super::commit_log::written_out(self, logged);
            let topic = p.topic.clone();
            let index = p.index;
            self.cache
                .borrow_mut()
                .remove_where(|k| k.0 == topic && k.1 == index);
            if p.st.borrow().claim.is_some() {
                spawn_detached(give_back(self.clone(), p.clone()));
            }
        }
        self.claim_assigned(&self.cluster());
        Dropped(gone)
    }

    /// Claims and loads, without waiting for a request, the partitions of this
    /// shard that are assigned to this broker and held by nobody (clusters): a
    /// failover completes as soon as the previous owner's key is gone, and
    /// Metadata shows the new epoch before clients come asking.
    fn claim_assigned(self: &Rc<Self>, next: &Cluster) {
        if !next.live.clustered || self.is_shutting_down() {
            return;
        }
        for t in next.topics.values() {
            for index in 0..t.partitions {
                if crate::placement::partition_shard(&t.name, index, self.shards) != self.shard
                    || !next.unclaimed_mine(t, index)
                    || self.open_partition(&t.name, index).is_some()
                {
                    continue;
                }
                let Ok(p) = super::recovery::entry(self, &t.name, index) else {
                    continue;
                };
                let logs = self.clone();
                spawn_detached(async move {
                    let deadline = logs.clock.now() + CLAIM_WAIT;
                    let _ = super::recovery::ready(&logs, &p, deadline).await;
                });
            }
        }
    }

    /// Removes `p` from the shard's map (if it is still the one there), so the
    /// next request for the partition starts a fresh load.
    pub(super) fn forget(&self, p: &Rc<Partition>) {
        let mut parts = self.partitions.borrow_mut();
        if let Some(m) = parts.get_mut(&*p.topic) {
            if m.get(&p.index).is_some_and(|x| Rc::ptr_eq(x, p)) {
                m.remove(&p.index);
            }
            if m.is_empty() {
                parts.remove(&*p.topic);
            }
        }
    }

    /// Stops serving `p` here: waiters get `why`, its buffers are released and
    /// it leaves the map and the read cache.
    pub(super) fn drop_partition(&self, p: &Rc<Partition>, why: KafkaError) {
        let (released, logged) = p.mark_dropped(why);
        self.release_buffered(released);
        super::commit_log::written_out(self, logged);
        self.forget(p);
        let topic = p.topic.clone();
        let index = p.index;
        self.cache
            .borrow_mut()
            .remove_where(|k| k.0 == topic && k.1 == index);
    }

    /// Adds to the shard's unflushed byte count.
    pub(super) fn add_buffered(&self, n: usize) {
        self.buffered.set(self.buffered.get() + n);
    }

    pub(super) fn release_buffered(&self, n: usize) {
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
    pub async fn reserve_space(&self, n: usize, deadline: Instant) -> bool {
        wait_until(&self.clock, deadline, &self.space_waiters, || {
            self.buffered.get() + n <= self.settings.max_buffered_bytes || self.buffered.get() == 0
        })
        .await
    }

    /// Takes one of the shard's upload slots, waiting for one to free up.
    pub(super) async fn upload_slot(&self) -> UploadSlot<'_> {
        loop {
            let free = self.upload_slots.get();
            if free > 0 {
                self.upload_slots.set(free - 1);
                return UploadSlot { logs: self };
            }
            let (tx, rx) = oneshot::channel();
            self.upload_waiters.borrow_mut().push_back(tx);
            let _ = rx.await;
        }
    }

    /// Buffered bytes, upload queue and per-partition offsets, for /metrics and
    /// the control API's status.
    pub fn levels(&self) -> LogLevels {
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
        LogLevels {
            buffered_bytes: self.buffered.get(),
            upload_queue: self.upload_waiters.borrow().len(),
            uploads_in_flight: self
                .settings
                .upload_concurrency
                .saturating_sub(self.upload_slots.get()),
            pending_segments,
            pending_bytes,
            partitions,
        }
    }
}

/// How long an eager claim keeps its load retrying (a store that does not
/// answer); a request that comes later starts it again.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// How long a partition moving away may take to publish what it buffered before
/// it is dropped anyway (the store is not answering): waiting producers then get
/// NOT_LEADER_OR_FOLLOWER and retry at the new owner.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// Hands a partition over to the broker it is now assigned to: no more appends
/// (`releasing` is set), what is buffered is sealed and published, then the
/// partition is dropped here and its claim given back, so the new owner claims
/// at once instead of waiting for a lease.
async fn release(logs: Rc<Logs>, p: Rc<Partition>) {
    super::append::seal(&logs, &p);
    let deadline = logs.clock.now() + RELEASE_WAIT;
    loop {
        let busy = {
            let st = p.st.borrow();
            !st.deleted
                && (st.uploading
                    || !st.pending.is_empty()
                    || matches!(st.load, super::Load::Loading(_)))
        };
        if !busy || logs.clock.now() >= deadline {
            break;
        }
        // Polled: a load or an upload may be what it waits for, and either can
        // end at any moment (`uploads_idle` alone would resolve at once while a
        // load runs, and the loop would spin without ever yielding the core).
        logs.clock.sleep(Duration::from_millis(20)).await;
    }
    let claim = p.st.borrow_mut().claim.take();
    let was_deleted = p.st.borrow().deleted;
    if !was_deleted {
        logs.drop_partition(&p, KafkaError::NotLeaderOrFollower);
    }
    if let Some(claim) = claim {
        release_claim(&logs, &p, claim).await;
    }
}

/// Gives up the claim on a partition whose topic is being deleted, once no
/// upload of it is writing: the deleting broker waits for every claim of the
/// topic to be gone before it deletes the objects.
async fn give_back(logs: Rc<Logs>, p: Rc<Partition>) {
    p.uploads_idle().await;
    let claim = p.st.borrow_mut().claim.take();
    if let Some(claim) = claim {
        release_claim(&logs, &p, claim).await;
    }
}

/// Gives `claim` on `p` back to the metadata store (best effort: if it fails,
/// the claim ends with this broker's lease).
pub(super) async fn release_claim(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    claim: crate::metadata::Claim,
) {
    let meta = logs.meta.clone();
    let (topic, index) = (p.topic.to_string(), p.index);
    let res = logs
        .io
        .call(async move { meta.release_partition(&topic, index, claim).await })
        .await;
    if let Err(e) = res {
        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "releasing a partition claim failed; it ends with this broker's lease");
    }
}

/// Partitions a new snapshot dropped.
pub struct Dropped(Vec<Rc<Partition>>);

impl Dropped {
    /// Resolves when no upload of a dropped partition is still writing objects.
    pub async fn uploads_idle(self) {
        for p in self.0 {
            p.uploads_idle().await;
        }
    }
}

/// A held upload slot; returned to the shard on drop.
pub(super) struct UploadSlot<'a> {
    logs: &'a Logs,
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.logs.upload_slots.set(self.logs.upload_slots.get() + 1);
        if let Some(w) = self.logs.upload_waiters.borrow_mut().pop_front() {
            let _ = w.send(());
        }
    }
}
