//! The shard's commit log (`KAFSCALE_LOCAL_COMMIT=log`, local directory store):
//! a group commit is made durable by one append and one `fdatasync` of the
//! shard's log (`segstore::commitlog`) instead of two files created, written,
//! linked and fsynced per partition segment. At low and middle rates, where
//! every produce request becomes a commit of its own, those files are most of
//! the broker's CPU (docs/benchmarks-ab.md).
//!
//! The path of a segment:
//! 1. Sealed by group commit (or the flush tick, a full buffer, a flush), it
//!    stays in the partition's `pending` queue and the partition goes on the
//!    shard's log queue.
//! 2. The log task appends every queued partition's new segments in one append.
//!    When it returns they are durable: the high watermark moves past them and
//!    `acks=all` producers are answered. Reads serve them from `pending`.
//! 3. At the next flush tick (or once they add up to a segment's size, or at
//!    shutdown) the partition's logged segments are written out as one object
//!    (`segstore::coalesce`) through the usual create-only PUT, with its fsyncs;
//!    then they leave `pending` and enter the durable list.
//! 4. A log file is removed once every segment in it has been written out (or
//!    its partition was deleted).
//!
//! At start, before any shard serves, `replay` writes out whatever the logs hold
//! beyond the store's files (a crash between 2 and 3), then removes the logs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use kafscale_segstore::commitlog::{self, CommitLogWriter, Logged};
use kafscale_segstore::{
    encode_index, SealedSegment, Segment, SegmentStore, StoreError, DEFAULT_INDEX_INTERVAL,
};
use tracing::{info, warn};

use super::logs::Logs;
use super::Partition;
use crate::io::CallError;
use crate::runtime::{sleep, spawn_detached, Backoff};

/// A log file is closed and a new one started past this size, so that files
/// whose segments were all written out can go.
const MAX_FILE_BYTES: u64 = 64 << 20;

const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// Where the logs of a broker with data directory `data_dir` live.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("commitlog")
}

/// One shard's log and what the shard knows about it.
pub struct ShardLog {
    writer: Arc<Mutex<CommitLogWriter>>,
    /// Partitions with sealed segments no append has taken yet.
    queue: RefCell<Vec<Rc<Partition>>>,
    /// An append is running: what is sealed meanwhile waits for the next one.
    busy: Cell<bool>,
    waiter: RefCell<Option<oneshot::Sender<()>>>,
    /// Logged segments not yet written out, by log file.
    live: RefCell<BTreeMap<u64, usize>>,
    /// Partitions holding logged segments (the flush tick writes them out).
    holding: RefCell<Vec<Rc<Partition>>>,
}

impl ShardLog {
    /// Opens a new log file for `shard` in `dir` (blocking: called once, as the
    /// shard starts).
    pub fn open(dir: &Path, shard: usize) -> std::io::Result<ShardLog> {
        let writer = CommitLogWriter::open(dir, shard as u32, MAX_FILE_BYTES)?;
        Ok(ShardLog {
            writer: Arc::new(Mutex::new(writer)),
            queue: RefCell::new(Vec::new()),
            busy: Cell::new(false),
            waiter: RefCell::new(None),
            live: RefCell::new(BTreeMap::new()),
            holding: RefCell::new(Vec::new()),
        })
    }

    pub(super) fn busy(&self) -> bool {
        self.busy.get()
    }

    fn wake(&self) {
        if let Some(tx) = self.waiter.borrow_mut().take() {
            let _ = tx.send(());
        }
    }
}

/// After a seal: queues the partition's new segments for the log, and starts
/// writing its logged ones out if that is due.
pub(super) fn kick(logs: &Rc<Logs>, p: &Rc<Partition>) {
    let Some(log) = &logs.clog else { return };
    let (queue, start) = {
        let mut st = p.st.borrow_mut();
        if st.deleted {
            return;
        }
        let queue = !st.log_queued && st.pending.len() > st.log_taken;
        if queue {
            st.log_queued = true;
        }
        let start = !st.uploading && st.logged > 0 && (st.write_out || logs.is_shutting_down());
        if start {
            st.uploading = true;
        }
        (queue, start)
    };
    if queue {
        log.queue.borrow_mut().push(p.clone());
        log.wake();
    }
    if start {
        logs.upload_running(true);
        spawn_detached(super::upload::upload_loop(logs.clone(), p.clone()));
    }
}

/// The flush tick: every partition holding logged segments writes them out.
pub(super) fn tick(logs: &Rc<Logs>) {
    let Some(log) = &logs.clog else { return };
    let holding = std::mem::take(&mut *log.holding.borrow_mut());
    for p in holding {
        {
            let mut st = p.st.borrow_mut();
            if st.deleted || st.logged == 0 {
                continue;
            }
            st.write_out = true;
        }
        kick(logs, &p);
    }
}

/// The next object to write out: the partition's logged segments, as many as
/// fit in a segment's size (at least one), as one segment; and how many of
/// `pending` it covers. None when nothing is due.
pub(super) fn next_object(logs: &Logs, p: &Partition) -> Option<(super::upload::Object, usize)> {
    let mut st = p.st.borrow_mut();
    if st.deleted || st.logged == 0 || !(st.write_out || logs.is_shutting_down()) {
        return None;
    }
    let limit = p.settings.get().segment_bytes;
    let mut n = 0;
    let mut bytes = 0;
    for s in st.pending.iter().take(st.logged) {
        let rolled = st.log_breaks.contains(&s.segment.base_offset);
        if n > 0 && (bytes + s.segment.size() > limit || rolled) {
            break;
        }
        bytes += s.segment.size();
        n += 1;
    }
    if n == st.logged {
        st.write_out = false;
    }
    if let Some(first) = st.pending.front().map(|s| s.segment.base_offset) {
        // Breaks at or before the object's start are behind it now.
        st.log_breaks.retain(|&b| b > first);
    }
    if n == 1 {
        return st
            .pending
            .front()
            .map(|s| (super::upload::Object::One(s.clone()), 1));
    }
    let parts = st
        .pending
        .iter()
        .take(n)
        .map(|s| s.segment.clone())
        .collect();
    Some((super::upload::Object::Parts(parts), n))
}

/// `n` logged segments of `p` were written out: they leave `pending`.
pub(super) fn took_out(logs: &Logs, p: &Partition, n: usize) {
    let seqs: Vec<u64> = {
        let mut st = p.st.borrow_mut();
        for _ in 0..n {
            if let Some(s) = st.pending.pop_front() {
                st.logged_bytes = st.logged_bytes.saturating_sub(s.segment.size());
            }
        }
        st.logged = st.logged.saturating_sub(n);
        st.log_taken = st.log_taken.saturating_sub(n);
        let n = n.min(st.log_seqs.len());
        st.log_seqs.drain(..n).collect()
    };
    written_out(logs, seqs);
}

/// Segments in these log files are in the store's files now (or their
/// partition is gone): files left with none are removed.
pub(super) fn written_out(logs: &Logs, seqs: Vec<u64>) {
    let Some(log) = &logs.clog else { return };
    if seqs.is_empty() {
        return;
    }
    let mut done = Vec::new();
    {
        let mut live = log.live.borrow_mut();
        for seq in seqs {
            if let Some(n) = live.get_mut(&seq) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    live.remove(&seq);
                    done.push(seq);
                }
            }
        }
    }
    if done.is_empty() {
        return;
    }
    let writer = log.writer.clone();
    let io = logs.io.clone();
    spawn_detached(async move {
        let res = io
            .call(async move {
                tokio::task::spawn_blocking(move || {
                    let w = writer.lock().unwrap_or_else(|e| e.into_inner());
                    for seq in done {
                        w.retire(seq)?;
                    }
                    Ok::<(), std::io::Error>(())
                })
                .await
                .map_err(std::io::Error::other)?
            })
            .await;
        if let Err(e) = res {
            warn!(error = %e, "removing a written-out commit log file failed; it is replayed (and skipped) at the next start");
        }
    });
}

/// The shard's log task: appends what is queued, one append at a time; what
/// is sealed during an append goes into the next.
pub async fn log_task(logs: Rc<Logs>) {
    let Some(log) = &logs.clog else { return };
    loop {
        let queued = std::mem::take(&mut *log.queue.borrow_mut());
        let mut records = Vec::new();
        let mut marks = Vec::new();
        for p in queued {
            let mut st = p.st.borrow_mut();
            st.log_queued = false;
            if st.deleted {
                continue;
            }
            let (from, to) = (st.log_taken, st.pending.len());
            if from >= to {
                continue;
            }
            let mut last = -1;
            for s in st.pending.range(from..to) {
                last = s.segment.last_offset;
                records.push(Logged {
                    topic: p.topic.clone(),
                    topic_id: *p.topic_id.as_bytes(),
                    partition: p.index,
                    base_offset: s.segment.base_offset,
                    last_offset: s.segment.last_offset,
                    segment: s.segment.data.clone(),
                });
            }
            st.log_taken = to;
            marks.push((p.clone(), last));
        }
        if records.is_empty() {
            let (tx, rx) = oneshot::channel();
            *log.waiter.borrow_mut() = Some(tx);
            if log.queue.borrow().is_empty() {
                let _ = rx.await;
            }
            continue;
        }
        log.busy.set(true);
        let seq = append(&logs, log, Arc::new(records)).await;
        log.busy.set(false);
        for (p, last) in marks {
            let (acked, woken) = {
                let mut st = p.st.borrow_mut();
                if st.deleted {
                    continue;
                }
                // Everything taken is logged now: one append at a time, and what
                // was written out meanwhile left the front of both counts.
                let n = st.log_taken.saturating_sub(st.logged);
                let added: usize = st
                    .pending
                    .range(st.logged..st.log_taken)
                    .map(|s| s.segment.size())
                    .sum();
                st.logged_bytes += added;
                st.logged = st.log_taken;
                st.log_seqs.extend(std::iter::repeat_n(seq, n));
                *log.live.borrow_mut().entry(seq).or_default() += n;
                st.high_watermark = st.high_watermark.max(last + 1);
                let hw = st.high_watermark;
                let mut acked = Vec::new();
                while st.ack_waiters.front().is_some_and(|(l, _)| *l < hw) {
                    if let Some((_, w)) = st.ack_waiters.pop_front() {
                        acked.push(w);
                    }
                }
                if st.logged_bytes >= p.settings.get().segment_bytes {
                    // A segment's worth: no reason to hold it until the tick.
                    st.write_out = true;
                }
                (acked, std::mem::take(&mut st.hw_waiters))
            };
            log.holding.borrow_mut().push(p.clone());
            for w in acked {
                let _ = w.send(Ok(()));
            }
            for w in woken {
                let _ = w.send(());
            }
            kick(&logs, &p);
        }
        // Partitions that collected data during the append may seal now.
        super::group_commit::wake(&logs);
    }
}

/// Appends `records` until it succeeds; returns the log file they went to.
/// A failed append (or fsync) leaves the file in an unknown state: the writer
/// starts a new file and the whole append is made again there. Replay reads
/// a file up to its first record that does not hold, and skips what the
/// store's files already have, so a record that did land twice is written
/// once.
async fn append(logs: &Logs, log: &ShardLog, records: Arc<Vec<Logged>>) -> u64 {
    let mut backoff = BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (writer, recs) = (log.writer.clone(), records.clone());
        let res = logs
            .io
            .call(async move {
                tokio::task::spawn_blocking(move || {
                    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                    w.append(&recs).inspect_err(|_| {
                        let _ = w.rotate();
                    })
                })
                .await
                .map_err(std::io::Error::other)?
            })
            .await;
        match res {
            Ok(seq) => return seq,
            Err(CallError::Failed(e)) => {
                warn!(shard = logs.shard, attempt, error = %e, "commit log append failed; retrying in a new file")
            }
            Err(CallError::Gone(e)) => {
                warn!(shard = logs.shard, attempt, error = %e, "commit log append task lost; retrying")
            }
        }
        sleep(backoff.next()).await;
    }
}

/// What the store holds of a partition: one past the last offset of its
/// newest object (plain or compacted), 0 for none.
async fn stored_end(store: &SegmentStore, topic: &str, partition: i32) -> Result<i64, StoreError> {
    let mut end = 0;
    if let Some(meta) = store.list_segments(topic, partition).await?.last() {
        let footer = store.read_footer(topic, partition, meta).await?;
        end = footer.last_offset + 1;
    }
    if let Some(c) = store.list_compacted(topic, partition).await?.last() {
        let obj = store.read_object(topic, partition, c.base, c.gen).await?;
        end = end.max(obj.last_offset + 1);
    }
    Ok(end)
}

/// Writes out what the logs in `dir` hold beyond the store's files, then
/// removes the logs. Segments of topics that no longer exist (by name and id)
/// are dropped. Runs before any shard serves.
pub async fn replay(
    dir: &Path,
    store: &SegmentStore,
    topic_id: impl Fn(&str) -> Option<[u8; 16]>,
) -> Result<usize, ReplayError> {
    let files = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || commitlog::replay(&dir))
            .await
            .map_err(|e| ReplayError::Io(std::io::Error::other(e)))??
    };
    if files.is_empty() {
        return Ok(0);
    }
    let mut by_partition: BTreeMap<(Arc<str>, i32), Vec<Logged>> = BTreeMap::new();
    for (_, records) in &files {
        for r in records {
            if topic_id(&r.topic) != Some(r.topic_id) {
                continue;
            }
            by_partition
                .entry((r.topic.clone(), r.partition))
                .or_default()
                .push(r.clone());
        }
    }
    let mut written = 0;
    for ((topic, partition), mut segs) in by_partition {
        segs.sort_by_key(|s| s.base_offset);
        let mut end = stored_end(store, &topic, partition).await?;
        for s in segs {
            if s.base_offset < end {
                // In the store's files already (written out before the crash).
                continue;
            }
            let segment = Segment::parse(s.segment.clone()).map_err(|e| ReplayError::Corrupt {
                topic: topic.to_string(),
                partition,
                base_offset: s.base_offset,
                error: e.to_string(),
            })?;
            let index = encode_index(&segment.batches, DEFAULT_INDEX_INTERVAL);
            let sealed = SealedSegment { segment, index };
            store.put_segment(&topic, partition, &sealed).await?;
            end = s.last_offset + 1;
            written += 1;
        }
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for (f, _) in files {
            std::fs::remove_file(&f.path)?;
        }
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| ReplayError::Io(std::io::Error::other(e)))??;
    if written > 0 {
        info!(segments = written, "commit log replayed into the store");
    }
    Ok(written)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the commit log: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing a logged segment to the store: {0}")]
    Store(#[from] StoreError),
    #[error("logged segment {topic}-{partition} at {base_offset} does not parse: {error}")]
    Corrupt {
        topic: String,
        partition: i32,
        base_offset: i64,
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::{build_batch, BatchHeader};
    use kafscale_segstore::SegmentBuilder;

    /// A segment of `n` one-record batches from `base`.
    fn segment(base: i64, n: usize) -> SealedSegment {
        let mut b = SegmentBuilder::new(base, 7, 64);
        for i in 0..n {
            let raw = build_batch(0, 1, &[format!("v{}", base + i as i64).as_bytes()]);
            b.append(&raw, &BatchHeader::parse(&raw).unwrap(), 0);
        }
        b.finish(DEFAULT_INDEX_INTERVAL)
    }

    fn logged(topic: &str, id: u8, s: &SealedSegment) -> Logged {
        Logged {
            topic: topic.into(),
            topic_id: [id; 16],
            partition: 0,
            base_offset: s.segment.base_offset,
            last_offset: s.segment.last_offset,
            segment: s.segment.data.clone(),
        }
    }

    #[tokio::test]
    async fn replay_writes_out_what_the_store_lacks_for_live_topics_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("commitlog");
        let store = SegmentStore::new(Arc::new(object_store::memory::InMemory::new()), "ns");
        let (a, b, c) = (segment(0, 10), segment(10, 10), segment(20, 5));
        // `a` and `b` were written out as one object before the crash; `c` was not.
        let ab =
            kafscale_segstore::coalesce(&[&a.segment, &b.segment], DEFAULT_INDEX_INTERVAL).unwrap();
        store.put_segment("t", 0, &ab).await.unwrap();
        let mut w0 = CommitLogWriter::open(&dir, 0, MAX_FILE_BYTES).unwrap();
        let mut w1 = CommitLogWriter::open(&dir, 1, MAX_FILE_BYTES).unwrap();
        w0.append(&[logged("t", 1, &a), logged("t", 1, &b)])
            .unwrap();
        w1.append(&[logged("t", 1, &c)]).unwrap();
        // A deleted topic's segment, and one of an earlier topic of this name.
        w1.append(&[logged("gone", 2, &a), logged("t", 9, &segment(25, 3))])
            .unwrap();
        drop((w0, w1));

        let ids = |name: &str| (name == "t").then_some([1u8; 16]);
        assert_eq!(replay(&dir, &store, ids).await.unwrap(), 1);
        let bases: Vec<i64> = store
            .list_segments("t", 0)
            .await
            .unwrap()
            .iter()
            .map(|m| m.base_offset)
            .collect();
        assert_eq!(bases, vec![0, 20]);
        let read = store.read_segment("t", 0, 20).await.unwrap();
        assert_eq!(read.data, c.segment.data);
        assert!(store.list_segments("gone", 0).await.unwrap().is_empty());
        assert!(commitlog::list(&dir).unwrap().is_empty());
        // Nothing left: a second start replays nothing.
        assert_eq!(replay(&dir, &store, ids).await.unwrap(), 0);
    }
}
