//! A shard: one pinned core and everything it owns. No locks: the state is in
//! `RefCell`/`Cell`, touched only from this shard's thread, and never borrowed
//! across an `.await`. Other shards reach it only through jobs on the mesh.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use kafscale_segstore::{HealthState, StoreStats};

use crate::clock::Clock;
use crate::groups::Groups;
use crate::io::Io;
use crate::metadata::{Cluster, MetadataStore};
use crate::obs::metrics::{GroupLevels, ShardGauges, ShardMetrics, Snapshot};
use crate::partition::{LogHandles, Logs};
use crate::runtime::{wait_until, Job, MeshTx};
use crate::settings::Settings;

/// State shared by every shard, built once at start.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub io: Io,
    pub store: kafscale_segstore::SegmentStore,
    pub meta: Arc<dyn MetadataStore>,
    /// Object-store counters and health, fed by the I/O runtime.
    pub store_stats: Arc<StoreStats>,
    /// Fault injection (in-process tests): this shard installs snapshots late.
    pub snapshot_delay: Option<(usize, std::time::Duration)>,
    /// Where every shard's timers and deadlines read the time.
    pub clock: Clock,
    /// Shards that finished their shutdown flush; the last one gives the
    /// broker's partitions up (`MetadataStore::resign`).
    pub flushed: Arc<std::sync::atomic::AtomicUsize>,
    /// Connection and request-byte limits, broker-wide.
    pub admission: Arc<crate::admission::Admission>,
    /// Set when the shards write the local directory store themselves.
    pub local_uring: Option<crate::partition::LocalUringConfig>,
    /// The commit logs' directory when KAFSCALE_LOCAL_COMMIT=log applies.
    pub commit_log: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not reachable")]
pub struct ShardGone(pub usize);

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub(crate) flushed: Arc<std::sync::atomic::AtomicUsize>,
    pub settings: Arc<Settings>,
    pub io: Io,
    pub meta: Arc<dyn MetadataStore>,
    store_stats: Arc<StoreStats>,
    mesh: MeshTx<Shard>,
    /// This shard's partitions and their produce, upload and fetch state.
    pub(crate) logs: Rc<Logs>,
    pub(crate) in_flight_requests: Cell<usize>,
    /// Connection and request-byte limits, shared with every shard.
    pub(crate) admission: Arc<crate::admission::Admission>,
    /// Serialises topic creation and deletion (used on the metadata shard only).
    pub(crate) admin_lock: futures::lock::Mutex<()>,
    /// Topics whose deletion this broker is finishing (metadata shard only).
    pub(crate) deletions: RefCell<std::collections::HashSet<String>>,
    /// The consumer groups hashed to this shard.
    pub(crate) groups: Rc<Groups>,
    /// This shard's counters, summed over all shards at scrape time.
    pub(crate) metrics: Rc<ShardMetrics>,
    /// Requests waiting for this shard to install a newer cluster snapshot.
    revision_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Fault injection (tests): how late this shard installs snapshots.
    snapshot_delay: Option<std::time::Duration>,
    clock: Clock,
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
        let metrics = Rc::new(ShardMetrics::new(shared.settings.throughput_window_sec));
        let handles = LogHandles {
            io: shared.io.clone(),
            store: shared.store.clone(),
            meta: shared.meta.clone(),
            clock: shared.clock.clone(),
            local_uring: shared.local_uring.clone(),
            commit_log: shared.commit_log.clone(),
        };
        let logs = Logs::new(
            id,
            count,
            shared.settings.log.clone(),
            handles,
            metrics.clone(),
            cluster,
        );
        Shard {
            id,
            count,
            settings: shared.settings.clone(),
            flushed: shared.flushed.clone(),
            io: shared.io.clone(),
            meta: shared.meta.clone(),
            store_stats: shared.store_stats.clone(),
            mesh,
            logs: Rc::new(logs),
            in_flight_requests: Cell::new(0),
            admission: shared.admission.clone(),
            admin_lock: futures::lock::Mutex::new(()),
            deletions: RefCell::new(Default::default()),
            groups: Rc::new(groups),
            metrics,
            revision_waiters: RefCell::new(Vec::new()),
            snapshot_delay: shared
                .snapshot_delay
                .filter(|(shard, _)| *shard == id)
                .map(|(_, d)| d),
            clock: shared.clock.clone(),
        }
    }

    /// The clock request deadlines and the shard's timers follow.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The object store's health: one relaxed atomic load, cheap enough for every
    /// produce request.
    pub fn store_health(&self) -> HealthState {
        self.store_stats.health.state()
    }

    /// This shard's counters and current levels, for /metrics.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let levels = self.logs.levels();
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
            buffered_bytes: levels.buffered_bytes as u64,
            upload_queue: levels.upload_queue as u64,
            uploads_in_flight: levels.uploads_in_flight as u64,
            pending_segments: levels.pending_segments,
            pending_bytes: levels.pending_bytes,
        };
        let mut snap = self.metrics.snapshot(gauges, levels.partitions, groups);
        snap.request_bytes = self.admission.request_bytes() as u64;
        snap.request_memory_waits = self.admission.memory_waits();
        snap
    }

    /// This shard's current view of the cluster.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.logs.cluster()
    }

    /// The object store's segments.
    pub fn store(&self) -> &kafscale_segstore::SegmentStore {
        self.logs.store()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.logs.is_shutting_down()
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
        wait_until(&self.clock, deadline, &self.revision_waiters, || {
            self.logs.cluster().revision >= revision
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
            // Real time: it simulates a core busy with other work.
            crate::runtime::sleep(d).await;
        }
        let prev = self.logs.cluster();
        let dropped = self.logs.install_cluster(next.clone());
        if next.live.clustered {
            crate::groups::follow_coordination(&self.groups, &prev, &next, self.id, self.count);
        }
        for w in self.revision_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
        // So that the caller can delete a dropped topic's objects without racing a PUT.
        dropped.uploads_idle().await;
    }
}
