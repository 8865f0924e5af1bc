//! One partition's log, owned by one shard: the active segment buffer, sealed
//! segments waiting for upload, the durable segment list, the offsets, and the
//! producers and consumers waiting on them.
//!
//! Offsets: `next_offset` is the next one to assign; `high_watermark` is one past
//! the last durable offset. Consumers never see data at or above the high
//! watermark, and `acks=-1` producers are answered when it passes their batch.

mod append;
mod commit_log;
mod compaction;
mod group_commit;
mod local_uring;
mod log_start;
mod logs;
mod order;
mod producers;
mod read;
mod recovery;
mod retention;
mod timeindex;
mod upload;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;

use futures::channel::oneshot;
use kafscale_segstore::{SealedSegment, SegmentBuilder};
use uuid::Uuid;

pub use append::{append, flush_ticker, seal, LEADER_EPOCH};
pub use commit_log::{dir as commit_log_dir, log_task, replay as replay_commit_log, ReplayError};
pub use compaction::cleaner_ticker;
pub use group_commit::group_commit;
pub use local_uring::LocalUringConfig;
pub use log_start::delete_records;
pub use logs::{LogHandles, LogSettings, Logs};
pub use order::{Order, OrderBook, Ticket};
pub use read::{read, wait_for_data};
pub use recovery::{entry, partition, ready};
pub use retention::retention_ticker;
pub use timeindex::{offset_for_time, TimeLookup};

use crate::errors::KafkaError;
use crate::metadata::TopicSettings;

/// Record bytes of a segment: what the shard counts as buffered while unflushed.
pub(crate) fn body_bytes(s: &kafscale_segstore::Segment) -> usize {
    s.size() - kafscale_segstore::SEGMENT_HEADER_LEN - kafscale_segstore::SEGMENT_FOOTER_LEN
}

/// A durable segment of the log.
#[derive(Debug, Clone, Copy)]
pub struct SegRef {
    pub base: i64,
    pub last: i64,
    /// Size of the `.kfs` object (retention.bytes counts these).
    pub bytes: u64,
    /// The largest batch max timestamp in the segment: known from the batch
    /// headers for segments uploaded by this process, and learned by reading the
    /// segment for recovered ones (the `.kfs` format has no place for it; see
    /// docs/storage.md, "Time bounds").
    pub max_ts: Option<i64>,
    /// The object holding it: 0 for the plain `segment-{base}.kfs`, else a
    /// compacted segment's id (`segstore::keys::object_path`). A compacted
    /// segment covers `base..=last` but its batches may start later and have gaps.
    pub gen: u64,
}

impl SegRef {
    /// The segment's key in the shard's read cache.
    pub(crate) fn key(&self, p: &Partition) -> logs::SegKey {
        (p.topic.clone(), p.index, self.base, self.gen)
    }
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub topic_id: Uuid,
    /// The topic's configs as they apply now; replaced when a new cluster
    /// snapshot changes them (AlterConfigs), read on every append and retention pass.
    pub(crate) settings: Cell<TopicSettings>,
    pub(crate) st: RefCell<State>,
    /// Reads in flight by the `State::list_version` they took their segments
    /// from (`Partition::pin`); apart from `st` so that a guard can drop anywhere.
    pub(crate) pins: RefCell<std::collections::BTreeMap<u64, usize>>,
}

pub(crate) enum Load {
    /// Created, and nobody has asked for it yet (`recovery::ready` starts the load).
    Idle,
    Loading(Vec<oneshot::Sender<Result<(), KafkaError>>>),
    Ready,
}

pub(crate) struct State {
    pub load: Load,
    pub deleted: bool,
    /// What requests for a deleted (dropped) partition are told: the topic is
    /// gone, or the partition moved to another broker.
    pub gone: KafkaError,
    /// This broker's claim on the partition (clusters; docs/cluster.md): the
    /// token every next-offset commit compares. Set by the load.
    pub claim: Option<crate::metadata::Claim>,
    /// Ownership is moving to another broker: no more appends; what is buffered
    /// is published, then the claim is released.
    pub releasing: bool,
    pub log_start: i64,
    pub next_offset: i64,
    pub high_watermark: i64,
    /// DrainPartitions stopped writes to this partition (until ResumePartitions).
    pub draining: bool,
    pub active: Option<SegmentBuilder>,
    /// Whether the partition is on its shard's list for the next flush tick.
    pub flush_queued: bool,
    /// The active buffer holds data an `acks=-1` producer waits for: group
    /// commit seals it as soon as it may (`group_commit.rs`).
    pub awaited: bool,
    /// Whether the partition is on its shard's group-commit list.
    pub eager_queued: bool,
    /// When the partition last sealed a segment (the minimum interval counts from it).
    pub last_seal: Option<std::time::Instant>,
    /// Size of the last sealed segment: sizes the next buffer, so busy partitions
    /// get room for a full segment and quiet ones do not reserve megabytes.
    pub last_sealed_bytes: usize,
    pub pending: VecDeque<SealedSegment>,
    /// The shard's commit log (`commit_log.rs`): how many of `pending`, from
    /// the front, are durable in it, and in which log file each is.
    pub logged: usize,
    /// The size of those `logged` segments (a segment's worth is written out
    /// without waiting for the tick).
    pub logged_bytes: usize,
    pub log_seqs: VecDeque<u64>,
    /// How many of `pending`, from the front, an append has taken (logged or
    /// being logged).
    pub log_taken: usize,
    /// Whether the partition is on the commit log's queue.
    pub log_queued: bool,
    /// The logged segments are to be written out to the store's files now.
    pub write_out: bool,
    /// Base offsets where a written-out object must start (a segment.ms roll):
    /// logged segments are not coalesced across them.
    pub log_breaks: VecDeque<i64>,
    pub uploading: bool,
    pub idle_waiters: Vec<oneshot::Sender<()>>,
    pub durable: Vec<SegRef>,
    /// `acks=-1` producers: (last offset of their batch, reply).
    pub ack_waiters: VecDeque<(i64, oneshot::Sender<Result<(), KafkaError>>)>,
    /// Segment objects removed from the log (retention, DeleteRecords, the
    /// cleaner) whose deletion has not succeeded yet, as (base, gen); retried
    /// on the next pass.
    pub doomed: Vec<(i64, u64)>,
    /// The committed compaction manifest (docs/compaction.md).
    pub manifest: crate::metadata::Manifest,
    /// A cleaning of this partition is running.
    pub cleaning: bool,
    /// Grows each time the cleaner replaces segments of `durable`.
    pub list_version: u64,
    /// Objects the cleaner replaced, by the `list_version` that no longer has
    /// them: deleted once no read of an earlier version is in flight.
    pub retired: Vec<(u64, (i64, u64))>,
    /// Long-polling fetches waiting for the high watermark to move.
    pub hw_waiters: Vec<oneshot::Sender<()>>,
    /// Sequence state of idempotent producers.
    pub producers: producers::Producers,
}

/// A read in flight on a version of a partition's segment list (`Partition::pin`).
pub(crate) struct Pin {
    p: std::rc::Rc<Partition>,
    version: u64,
}

impl Clone for Pin {
    fn clone(&self) -> Self {
        *self.p.pins.borrow_mut().entry(self.version).or_default() += 1;
        Pin {
            p: self.p.clone(),
            version: self.version,
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.p.pins.borrow_mut();
        if let Some(n) = pins.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.version);
            }
        }
    }
}

/// A partition's state as the control API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub log_start: i64,
    pub high_watermark: i64,
    /// The next offset to assign (Kafka's log end offset).
    pub log_end: i64,
    pub unflushed_bytes: usize,
    /// Sealed segments not yet durable, and their record bytes.
    pub pending_segments: usize,
    pub pending_bytes: usize,
    pub draining: bool,
    /// Durable segments, and the bytes of their `.kfs` objects.
    pub segments: usize,
    pub store_bytes: u64,
}

/// Offsets a client can ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub high_watermark: i64,
}

impl Partition {
    pub(crate) fn new(
        topic: Arc<str>,
        index: i32,
        topic_id: Uuid,
        settings: TopicSettings,
    ) -> Self {
        Partition {
            topic,
            index,
            topic_id,
            settings: Cell::new(settings),
            pins: RefCell::new(Default::default()),
            st: RefCell::new(State {
                load: Load::Idle,
                deleted: false,
                gone: KafkaError::UnknownTopicOrPartition,
                claim: None,
                releasing: false,
                log_start: 0,
                next_offset: 0,
                high_watermark: 0,
                draining: false,
                active: None,
                flush_queued: false,
                awaited: false,
                eager_queued: false,
                last_seal: None,
                last_sealed_bytes: 0,
                pending: VecDeque::new(),
                logged: 0,
                logged_bytes: 0,
                log_seqs: VecDeque::new(),
                log_taken: 0,
                log_queued: false,
                write_out: false,
                log_breaks: VecDeque::new(),
                uploading: false,
                idle_waiters: Vec::new(),
                durable: Vec::new(),
                ack_waiters: VecDeque::new(),
                doomed: Vec::new(),
                manifest: Default::default(),
                cleaning: false,
                list_version: 0,
                retired: Vec::new(),
                hw_waiters: Vec::new(),
                producers: Default::default(),
            }),
        }
    }

    pub fn offsets(&self) -> Offsets {
        let st = self.st.borrow();
        Offsets {
            log_start: st.log_start,
            high_watermark: st.high_watermark,
        }
    }

    pub fn status(&self) -> Status {
        let st = self.st.borrow();
        let pending_bytes = st
            .pending
            .iter()
            .map(|s| body_bytes(&s.segment))
            .sum::<usize>();
        Status {
            log_start: st.log_start,
            high_watermark: st.high_watermark,
            log_end: st.next_offset,
            unflushed_bytes: st.active.as_ref().map_or(0, |a| a.body_len()) + pending_bytes,
            pending_segments: st.pending.len(),
            pending_bytes,
            draining: st.draining,
            segments: st.durable.len(),
            store_bytes: st.durable.iter().map(|s| s.bytes).sum(),
        }
    }

    /// The leader epoch this broker holds the partition at: its claim's (clusters),
    /// 0 for a broker alone. Stored batches carry it.
    pub fn epoch(&self) -> i32 {
        self.st.borrow().claim.map_or(LEADER_EPOCH, |c| c.epoch)
    }

    /// Kafka's check of the leader epoch a client sends (KIP-320): -1 skips it;
    /// an older epoch means the client's metadata is stale (FENCED_LEADER_EPOCH,
    /// it refreshes), a newer one that this broker's view is (UNKNOWN_LEADER_EPOCH).
    pub fn check_epoch(&self, current: i32) -> Result<(), KafkaError> {
        let mine = self.epoch();
        if current < 0 || current == mine {
            Ok(())
        } else if current < mine {
            Err(KafkaError::FencedLeaderEpoch)
        } else {
            Err(KafkaError::UnknownLeaderEpoch)
        }
    }

    /// Marks a read of the current segment list as in flight until the guard
    /// drops: objects the cleaner replaces are deleted only after such reads
    /// are over (`State::retired`).
    pub(crate) fn pin(self: &std::rc::Rc<Self>) -> Pin {
        let version = self.st.borrow().list_version;
        *self.pins.borrow_mut().entry(version).or_default() += 1;
        Pin {
            p: self.clone(),
            version,
        }
    }

    /// Whether a read that took its segments before `version` is still in flight.
    pub(crate) fn pinned_before(&self, version: u64) -> bool {
        self.pins.borrow().range(..version).next().is_some()
    }

    /// Sets whether the partition refuses writes; returns the previous setting.
    pub(crate) fn set_draining(&self, on: bool) -> bool {
        std::mem::replace(&mut self.st.borrow_mut().draining, on)
    }

    /// Resolves when every offset below `target` is durable in the store's
    /// objects (with the commit log: written out of it too); the topic's
    /// deletion ends the wait with UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) async fn durable_to(&self, target: i64) -> Result<(), KafkaError> {
        loop {
            let rx = {
                let mut st = self.st.borrow_mut();
                if st.deleted {
                    return Err(KafkaError::UnknownTopicOrPartition);
                }
                let logged_below = st
                    .pending
                    .front()
                    .is_some_and(|s| st.logged > 0 && s.segment.base_offset < target);
                if st.high_watermark >= target && !logged_below {
                    return Ok(());
                }
                // Woken on every high-watermark move (as long-polling fetches
                // are) and every object written.
                let (tx, rx) = oneshot::channel();
                st.hw_waiters.push(tx);
                rx
            };
            let _ = rx.await;
        }
    }

    /// Whether the partition finished loading from the object store.
    pub(crate) fn loaded(&self) -> bool {
        let st = self.st.borrow();
        matches!(st.load, Load::Ready) && !st.deleted
    }

    /// Unflushed bytes: the active buffer and sealed segments not yet durable.
    pub fn unflushed_bytes(&self) -> usize {
        self.status().unflushed_bytes
    }

    /// Offsets for /metrics, and the sealed segments not yet durable (count,
    /// bytes); `None` while the partition loads or after its topic was deleted.
    pub(crate) fn levels(&self) -> Option<(crate::obs::metrics::PartitionLevels, u64, u64)> {
        let st = self.st.borrow();
        if st.deleted || !matches!(st.load, Load::Ready) {
            return None;
        }
        let bytes = st.pending.iter().map(|s| s.segment.size() as u64).sum();
        Some((
            crate::obs::metrics::PartitionLevels {
                topic: self.topic.to_string(),
                partition: self.index,
                log_start: st.log_start,
                log_end: st.next_offset,
                high_watermark: st.high_watermark,
            },
            st.pending.len() as u64,
            bytes,
        ))
    }

    /// The topic is gone: refuse further work, fail waiters, and hand back the
    /// unflushed bytes so the shard can release them.
    pub(crate) fn mark_deleted(&self) -> (usize, Vec<u64>) {
        self.mark_dropped(KafkaError::UnknownTopicOrPartition)
    }

    /// This shard stops serving the partition (topic gone, or ownership lost):
    /// refuse further work, fail waiters with `why`, and hand back the unflushed
    /// bytes so the shard can release them.
    /// Returns the bytes it held and the commit-log files of its logged segments.
    pub(crate) fn mark_dropped(&self, why: KafkaError) -> (usize, Vec<u64>) {
        let released = self.unflushed_bytes();
        let mut st = self.st.borrow_mut();
        st.deleted = true;
        st.gone = why;
        st.active = None;
        st.pending.clear();
        st.logged = 0;
        st.logged_bytes = 0;
        st.log_taken = 0;
        let seqs = std::mem::take(&mut st.log_seqs).into();
        for (_, w) in st.ack_waiters.drain(..) {
            let _ = w.send(Err(why));
        }
        for w in st.hw_waiters.drain(..) {
            let _ = w.send(());
        }
        if let Load::Loading(ws) = &mut st.load {
            for w in ws.drain(..) {
                let _ = w.send(Err(why));
            }
        }
        (released, seqs)
    }

    /// Its idempotent producers, as `Producers::describe` lists them.
    pub fn producers(&self) -> Vec<(i64, i16, i32, i64)> {
        self.st.borrow().producers.describe()
    }

    /// Resolves when no upload of this partition is running.
    pub(crate) async fn uploads_idle(&self) {
        let rx = {
            let mut st = self.st.borrow_mut();
            if !st.uploading {
                return;
            }
            let (tx, rx) = oneshot::channel();
            st.idle_waiters.push(tx);
            rx
        };
        let _ = rx.await;
    }
}
