//! Finding a partition on its shard, and restoring its state from the object
//! store the first time it is touched after start: list the segments, read the
//! last one's footer, and continue after its last offset. Recovery is lazy, so a
//! broker with many partitions starts at once and loads only what is used.
//!
//! With a store that tracks partition state (etcd), the committed next offset
//! counts too: the partition continues at the larger of the two, so an offset
//! that was ever acknowledged is never handed out again, even if the listing
//! lags behind or a segment went missing.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::Either;
use futures::StreamExt;
use kafscale_codec::batch::BatchHeader;
use kafscale_segstore::{CompactedMeta, Segment, SegmentMeta, StoreError};
use tracing::{error, info, warn};

use super::logs::Logs;
use super::producers::Producers;
use super::{Load, Partition, SegRef};
use crate::errors::KafkaError;
use crate::io::CallError;
use crate::metadata::{Committed, CompactedRange, Manifest, MetaError};
use crate::runtime::{sleep, spawn_detached, Backoff};

/// How long a request other than produce waits for a partition to load before
/// it is answered with the retriable KAFKA_STORAGE_ERROR (the load goes on).
const LOAD_WAIT: Duration = Duration::from_secs(10);
/// Back-off between attempts of a load that failed (the store did not answer,
/// or answered an error): doubling from the first to the last.
const LOAD_RETRY_FIRST: Duration = Duration::from_millis(50);
const LOAD_RETRY_MAX: Duration = Duration::from_secs(2);

/// The partition `topic`/`index` of this shard, loaded. Errors are Kafka codes.
pub async fn partition(
    logs: &Rc<Logs>,
    topic: &str,
    index: i32,
) -> Result<Rc<Partition>, KafkaError> {
    let p = entry(logs, topic, index)?;
    ready(logs, &p, logs.clock.now() + LOAD_WAIT).await?;
    Ok(p)
}

/// The partition `topic`/`index` of this shard, created (not yet loaded) if the
/// shard's snapshot has it. The first `ready` starts the load.
pub fn entry(logs: &Rc<Logs>, topic: &str, index: i32) -> Result<Rc<Partition>, KafkaError> {
    let existing = logs
        .partitions
        .borrow()
        .get(topic)
        .and_then(|m| m.get(&index))
        .cloned();
    if let Some(p) = existing {
        return Ok(p);
    }
    let cluster = logs.cluster();
    let t = cluster
        .topic(topic)
        .ok_or(KafkaError::UnknownTopicOrPartition)?;
    if index < 0 || index >= t.partitions {
        return Err(KafkaError::UnknownTopicOrPartition);
    }
    if !cluster.owns(t, index) {
        // Another broker owns it (or nobody yet): the client asks Metadata again.
        return Err(KafkaError::NotLeaderOrFollower);
    }
    let name: std::sync::Arc<str> = t.name.as_str().into();
    let settings = t.settings(logs.settings.segment_bytes);
    let p = Rc::new(Partition::new(name.clone(), index, t.id, settings));
    logs.partitions
        .borrow_mut()
        .entry(name)
        .or_default()
        .insert(index, p.clone());
    Ok(p)
}

/// Resolves when `p` has loaded. A load that fails is retried inside the broker
/// for as long as someone waits, so a request sees an error only when its own
/// deadline passes (KAFKA_STORAGE_ERROR, retriable) or the topic is deleted.
///
/// The first caller starts the load, after it is on the waiter list: glommio runs
/// a spawned task at once, up to its first pending await, and a failing store
/// call can be answered by then, so a load started before anyone waited could
/// find nobody waiting and give up on a partition a request is about to use.
pub async fn ready(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    deadline: Instant,
) -> Result<(), KafkaError> {
    let (rx, start) = {
        let mut st = p.st.borrow_mut();
        if st.deleted {
            return Err(st.gone);
        }
        let (tx, rx) = oneshot::channel();
        match &mut st.load {
            Load::Ready => return Ok(()),
            Load::Loading(waiters) => {
                waiters.push(tx);
                (rx, false)
            }
            Load::Idle => {
                st.load = Load::Loading(vec![tx]);
                (rx, true)
            }
        }
    };
    if start {
        spawn_detached(load(logs.clone(), p.clone()));
    }
    let timeout = logs.clock.sleep_until(deadline);
    futures::pin_mut!(timeout);
    match futures::future::select(rx, timeout).await {
        Either::Left((Ok(r), _)) => r,
        Either::Left((Err(_), _)) | Either::Right(_) => Err(KafkaError::KafkaStorageError),
    }
}

/// Why a partition could not be loaded from the store.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("the newest segment has no footer")]
    MissingFooter,
    #[error("segment {base} ends at {last}, before it starts")]
    Inverted { base: i64, last: i64 },
    #[error(transparent)]
    Store(#[from] kafscale_segstore::StoreError),
    #[error("metadata store: {0}")]
    Meta(#[from] crate::metadata::MetaError),
    #[error(transparent)]
    Io(#[from] crate::io::IoGone),
}

/// An object of the partition's log: a plain segment (`gen` 0) or a
/// compacted one (`last`: the end of the range it replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Obj {
    base: i64,
    gen: u64,
    size: u64,
    last: Option<i64>,
}

/// The log's objects, oldest first, from the listings and the compaction
/// manifest: plain segments inside a compacted range are left out (sources a
/// cleaning replaced and has not deleted yet), a range's compacted object is
/// in if it exists. Returns them and what to delete: the covered plain
/// segments and compacted objects the manifest does not name (a cleaning cut
/// short, or a previous owner's that was fenced).
fn merge_objects(
    segs: &[SegmentMeta],
    manifest: &Manifest,
    compacted: &[CompactedMeta],
) -> (Vec<Obj>, Vec<(i64, u64)>) {
    let mut garbage = Vec::new();
    let mut objs: Vec<Obj> = Vec::with_capacity(segs.len());
    for s in segs {
        if covered(&manifest.ranges, s.base_offset) {
            garbage.push((s.base_offset, 0));
        } else {
            objs.push(Obj {
                base: s.base_offset,
                gen: 0,
                size: s.size,
                last: None,
            });
        }
    }
    for c in compacted {
        match manifest
            .ranges
            .iter()
            .find(|r| r.gen == c.gen && r.base == c.base)
        {
            Some(r) => objs.push(Obj {
                base: r.base,
                gen: r.gen,
                size: c.size,
                last: Some(r.last),
            }),
            None => garbage.push((c.base, c.gen)),
        }
    }
    objs.sort_by_key(|o| o.base);
    (objs, garbage)
}

/// Whether offset `b` lies in one of `ranges` (sorted, not overlapping).
fn covered(ranges: &[CompactedRange], b: i64) -> bool {
    let i = ranges.partition_point(|r| r.base <= b);
    i > 0 && ranges[i - 1].last >= b
}

/// Durable segments and the next offset, from the log's objects, the
/// manifest's ranges and the newest plain segment's footer.
fn restore(
    objs: &[Obj],
    ranges: &[CompactedRange],
    last_offset: Option<i64>,
) -> Result<(Vec<SegRef>, i64), LoadError> {
    let mut out = Vec::with_capacity(objs.len());
    for (i, o) in objs.iter().enumerate() {
        let last = match o.last {
            Some(last) => last,
            None => {
                // Up to the next object or compacted range (one with nothing left
                // has no object), else the footer's.
                let next_range = ranges
                    .get(ranges.partition_point(|r| r.base <= o.base))
                    .map(|r| r.base);
                match objs
                    .get(i + 1)
                    .map(|n| n.base)
                    .into_iter()
                    .chain(next_range)
                    .min()
                {
                    Some(next) => next - 1,
                    None => last_offset.ok_or(LoadError::MissingFooter)?,
                }
            }
        };
        if last < o.base {
            return Err(LoadError::Inverted { base: o.base, last });
        }
        out.push(SegRef {
            base: o.base,
            last,
            bytes: o.size,
            max_ts: None,
            gen: o.gen,
        });
    }
    let next = out.last().map_or(0, |s| s.last + 1);
    Ok((out, next))
}

/// The log start over compacted ranges that kept nothing right before it:
/// their offsets are still the log's (a fetch there gets the next batch), so
/// the earliest offset does not move when a cleaning empties the oldest
/// segments. A compacted range whose object is gone (retention deleted it)
/// ends the walk.
fn start_over_empty_ranges(start: i64, ranges: &[CompactedRange], floor: i64) -> i64 {
    let mut start = start;
    while let Some(r) = ranges
        .iter()
        .find(|r| r.gen == 0 && r.last + 1 == start && r.base >= floor)
    {
        start = r.base;
    }
    start
}

/// Where the log continues: durable segments, the next offset and the log
/// start, from the segments and (stores that track it) the committed state.
///
/// - The next offset is raised to the committed one if that is larger (logged:
///   acknowledged offsets that are not in the object store's listing).
/// - Segments below the committed log start are not this topic's.
/// - With nothing ever committed for this topic id, segments under its prefix
///   are a deleted namesake's (late uploads of a paused owner, or objects whose
///   deletion failed): they are not served, and the log starts after them so
///   that no segment is ever written over.
fn with_committed(
    durable: Vec<SegRef>,
    next: i64,
    committed: Option<Committed>,
    tracked: bool,
) -> (Vec<SegRef>, i64, i64) {
    let first = |d: &[SegRef], next: i64| d.first().map_or(next, |s| s.base);
    if !tracked {
        // Only a log start moved by DeleteRecords can be kept (next offset 0).
        let kept = committed.map_or(0, |c| c.log_start).min(next);
        let mut durable = durable;
        durable.retain(|s| s.last >= kept);
        let start = first(&durable, next).max(kept);
        return (durable, next, start);
    }
    let c = committed.unwrap_or_default();
    if c.next_offset == 0 {
        if !durable.is_empty() {
            warn!(
                segments = durable.len(),
                next_offset = next,
                "segments under this partition belong to no publish of this topic; not serving them"
            );
        }
        return (Vec::new(), next, next);
    }
    let mut durable = durable;
    durable.retain(|s| s.last >= c.log_start);
    let next = if c.next_offset > next {
        warn!(
            from_segments = next,
            committed = c.next_offset,
            "committed next offset is ahead of the segments; continuing after it"
        );
        c.next_offset
    } else {
        next
    };
    let start = first(&durable, next).max(c.log_start.min(next));
    (durable, next, start)
}

async fn load(logs: Rc<Logs>, p: Rc<Partition>) {
    let mut backoff = Backoff::new(LOAD_RETRY_FIRST, LOAD_RETRY_MAX);
    let outcome = loop {
        match load_once(&logs, &p).await {
            Ok(r) => break Ok(r),
            Err(e @ LoadError::Meta(MetaError::NotOwner { .. } | MetaError::Unassigned { .. })) => {
                // Not retried here: the previous owner is still releasing it or
                // its lease has not run out; the client retries.
                info!(topic = %p.topic, partition = p.index, error = %e, "partition not claimed yet");
                break Err(e);
            }
            Err(e) => {
                let waiting = {
                    let mut st = p.st.borrow_mut();
                    if st.deleted {
                        return;
                    }
                    match &mut st.load {
                        Load::Loading(ws) => {
                            ws.retain(|w| !w.is_canceled());
                            !ws.is_empty()
                        }
                        Load::Ready | Load::Idle => false,
                    }
                };
                if !waiting {
                    // Nobody is waiting any more: forget the partition, so the next
                    // request starts a fresh load.
                    error!(topic = %p.topic, partition = p.index, error = %e, "partition recovery failed; will retry on next request");
                    break Err(e);
                }
                let delay = backoff.next();
                warn!(topic = %p.topic, partition = p.index, error = %e, retry_ms = delay.as_millis() as u64, "partition recovery failed; retrying");
                // Real time, not the logs' clock: the back-off paces calls to a
                // store that recovers in real time, and is no deadline or timer
                // of the protocol (the waiting requests' deadlines are).
                sleep(delay).await;
            }
        }
    };
    let dropped = {
        let mut st = p.st.borrow_mut();
        st.deleted.then(|| st.claim.take())
    };
    if let Some(claim) = dropped {
        // Dropped while loading (moved away, topic deleted): a claim made
        // meanwhile is given back so the next owner need not wait.
        if let Some(claim) = claim {
            super::logs::release_claim(&logs, &p, claim).await;
        }
        return;
    }
    let waiters = {
        let mut st = p.st.borrow_mut();
        let result = match outcome {
            Ok(Loaded {
                durable,
                next,
                log_start,
                producers,
                manifest,
                garbage,
            }) => {
                st.producers = producers;
                st.manifest = manifest;
                st.doomed.extend(garbage);
                st.log_start = log_start;
                st.next_offset = next;
                st.high_watermark = next;
                if !durable.is_empty() {
                    info!(topic = %p.topic, partition = p.index, segments = durable.len(), next_offset = next, "partition recovered");
                }
                st.durable = durable;
                Ok(())
            }
            Err(LoadError::Meta(MetaError::NotOwner { .. } | MetaError::Unassigned { .. })) => {
                Err(KafkaError::NotLeaderOrFollower)
            }
            Err(_) => Err(KafkaError::KafkaStorageError),
        };
        let waiters = match std::mem::replace(&mut st.load, Load::Ready) {
            Load::Loading(w) => w,
            Load::Ready | Load::Idle => Vec::new(),
        };
        if result.is_err() {
            st.deleted = true;
        }
        waiters.into_iter().map(|w| (w, result)).collect::<Vec<_>>()
    };
    let failed_claim = {
        let mut st = p.st.borrow_mut();
        if st.deleted {
            st.claim.take()
        } else {
            None
        }
    };
    if p.st.borrow().deleted {
        logs.forget(&p);
    }
    for (w, r) in waiters {
        let _ = w.send(r);
    }
    if let Some(claim) = failed_claim {
        // The next load claims again; meanwhile another broker may take it.
        super::logs::release_claim(&logs, &p, claim).await;
    }
}

/// What a load restores.
struct Loaded {
    durable: Vec<SegRef>,
    next: i64,
    log_start: i64,
    /// Idempotent producers' sequence state, from the batches of the log's tail.
    producers: Producers,
    /// The committed compaction manifest.
    manifest: Manifest,
    /// Objects no longer part of the log (see `merge_objects`), to delete.
    garbage: Vec<(i64, u64)>,
}

/// How much of the log's tail a load reads back for idempotent-producer state:
/// the newest segments up to this many, and up to this many bytes (at least the
/// newest segment). A producer that wrote within this window is known to the new
/// owner; one whose last batch is older starts unknown and is accepted at any
/// sequence (as in Kafka once its state expired). The window matters most right
/// after a move: a producer's request answered NOT_LEADER_OR_FOLLOWER by the
/// old owner, with the next one already in flight, must meet its last sequence
/// here, or that next one would be accepted past the gap.
/// Bounded because every partition a broker takes over reads it: at a failover
/// of many partitions the window, not the newest segment, is the read cost.
const TAIL_SEGMENTS: usize = 32;
const TAIL_BYTES: u64 = 8 << 20;
/// Segment reads of the tail in flight at once.
const TAIL_READS: usize = 8;

/// The newest objects to read for producer state, oldest first.
fn tail_window(objs: &[Obj]) -> &[Obj] {
    let mut bytes = 0u64;
    let mut n = 0;
    for m in objs.iter().rev().take(TAIL_SEGMENTS) {
        if n > 0 && bytes.saturating_add(m.size) > TAIL_BYTES {
            break;
        }
        bytes = bytes.saturating_add(m.size);
        n += 1;
    }
    &objs[objs.len() - n..]
}

/// Adds a segment's batches (read oldest segment first) to the producer state:
/// a producer retrying a batch that a previous owner (or a previous run) stored
/// gets its offsets back instead of a second copy, and its next batch is in
/// sequence.
fn add_producers(producers: &mut Producers, seg: &Segment, now_ms: i64, expire_ms: i64) {
    for b in &seg.batches {
        let (from, to) = (
            b.pos as usize,
            (b.pos as usize).saturating_add(b.len as usize),
        );
        let Some(bytes) = seg.data.get(from..to) else {
            continue;
        };
        if let Ok(h) = BatchHeader::parse(bytes) {
            // Recovered producers count as seen at the load: their expiry runs
            // from now, not from a timestamp the client chose.
            producers.record(&h, b.base_offset, b.last_offset, now_ms, expire_ms);
        }
    }
}

/// One attempt: the claim (clusters), the committed next offset (etcd), the
/// segment listing and the last segment's footer. The claim comes first, so that
/// no other broker publishes after what this one reads; it is kept on the
/// partition at once, so a failure after it cannot leak it.
async fn load_once(logs: &Rc<Logs>, p: &Rc<Partition>) -> Result<Loaded, LoadError> {
    let store = logs.store.clone();
    let topic = p.topic.to_string();
    let index = p.index;
    let (meta, topic_id) = (logs.meta.clone(), p.topic_id);
    if meta.tracks_ownership() && p.st.borrow().claim.is_none() {
        let (m, t) = (meta.clone(), topic.clone());
        let claim = logs
            .io
            .call(async move {
                m.claim_partition(&t, topic_id, index)
                    .await
                    .map_err(LoadError::from)
            })
            .await
            .map_err(CallError::flatten)?;
        p.st.borrow_mut().claim = Some(claim);
    }
    let tracked = meta.tracks_partition_state();
    let compact = p.settings.get().compact;
    let (objs, manifest, garbage, footer, committed, earlier, tail, lost_next) = logs
        .io
        .call(async move {
            // Untracked stores (embedded) keep only a log start DeleteRecords moved.
            let committed = meta.partition_state(&topic, topic_id, index).await?;
            // Read whatever the topic's policy is now: a topic that was compacted
            // and is no longer must not see the segments a cleaning replaced.
            let manifest = meta
                .compaction(&topic, topic_id, index)
                .await?
                .unwrap_or_default();
            let mut segs = store.list_segments(&topic, index).await?;
            let compacted = if compact || !manifest.ranges.is_empty() {
                store.list_compacted(&topic, index).await?
            } else {
                Vec::new()
            };
            // Sources of a cleaning that were not deleted yet are not the log.
            let mut garbage: Vec<(i64, u64)> = segs
                .iter()
                .filter(|s| covered(&manifest.ranges, s.base_offset))
                .map(|s| (s.base_offset, 0))
                .collect();
            segs.retain(|s| !covered(&manifest.ranges, s.base_offset));
            // The offset after the data of segments moved to quarantine: offsets
            // below it may have been acknowledged, so they are never handed out
            // again (fetches step over them, read.rs).
            let mut lost_next: Option<i64> = None;
            let (footer, tail) = loop {
                let Some(last) = segs.last().copied() else {
                    break (None, None);
                };
                match newest(&store, &topic, index, &last).await {
                    Ok(found) => break found,
                    Err(LoadError::Store(StoreError::Corrupt { key, source })) => {
                        // This broker owns the partition (its claim is held, or it
                        // is the only broker), so it alone moves the object.
                        let shown = store
                            .quarantine_segment(&topic, index, last.base_offset)
                            .await?;
                        let next = shown.map_or(last.base_offset, |l| l + 1).max(last.base_offset);
                        error!(
                            object = %key, error = %source, base_offset = last.base_offset,
                            next_offset = next,
                            "newest segment unreadable; moved under _quarantine/ and recovering from the segments before it"
                        );
                        lost_next = lost_next.max(Some(next));
                        segs.pop();
                    }
                    Err(e) => return Err(e),
                }
            };
            rebuild_missing_indexes(&store, &topic, index, &segs).await;
            let (objs, unnamed) = merge_objects(&segs, &manifest, &compacted);
            garbage.extend(unnamed);
            // The rest of the tail window, for producer state (the newest plain
            // segment came with the footer). Best effort: a segment that cannot
            // be read leaves the producers whose last batch it holds unknown.
            let window = tail_window(&objs);
            let newest_plain = segs.last().map(|s| s.base_offset);
            let older: Vec<(i64, u64)> = window
                .iter()
                .filter(|o| !(o.gen == 0 && Some(o.base) == newest_plain && tail.is_some()))
                .map(|o| (o.base, o.gen))
                .collect();
            let read: Vec<_> = futures::stream::iter(older.into_iter().map(|(base, gen)| {
                let (store, topic) = (store.clone(), topic.clone());
                async move { store.read_object(&topic, index, base, gen).await }
            }))
            .buffered(TAIL_READS)
            .collect()
            .await;
            let mut earlier = Vec::with_capacity(read.len());
            for r in read {
                match r {
                    Ok(seg) => earlier.push(seg),
                    Err(e) => {
                        warn!(topic, partition = index, error = %e, "segment of the log's tail unreadable; idempotent producers it holds start unknown");
                    }
                }
            }
            Ok::<_, LoadError>((objs, manifest, garbage, footer, committed, earlier, tail, lost_next))
        })
        .await
        .map_err(CallError::flatten)?;
    let (durable, next) = restore(&objs, &manifest.ranges, footer.map(|f| f.last_offset))?;
    let next = next.max(lost_next.unwrap_or(0));
    let (durable, next, log_start) = with_committed(durable, next, committed, tracked);
    // Only when the start is the first segment's (not a committed log start).
    let floor = committed.map_or(0, |c| c.log_start);
    let log_start = if durable.first().is_some_and(|s| s.base == log_start) {
        start_over_empty_ranges(log_start, &manifest.ranges, floor)
    } else {
        log_start
    };
    let (now_ms, expire_ms) = (
        logs.clock.wall_ms(),
        logs.settings.producer_id_expiration_ms(),
    );
    let mut producers = Producers::default();
    // Oldest first: the earlier segments, then the newest.
    let mut read: Vec<&Segment> = earlier.iter().chain(tail.as_ref()).collect();
    read.sort_by_key(|s| s.base_offset);
    for seg in read {
        add_producers(&mut producers, seg, now_ms, expire_ms);
    }
    Ok(Loaded {
        durable,
        next,
        log_start,
        producers,
        manifest,
        garbage,
    })
}

/// The newest segment's footer and, best effort, the whole segment (for the
/// idempotent producers). A bad footer or a body that fails its checks is
/// `StoreError::Corrupt`; a read that merely failed leaves the producers unknown.
async fn newest(
    store: &kafscale_segstore::SegmentStore,
    topic: &str,
    index: i32,
    last: &SegmentMeta,
) -> Result<(Option<kafscale_segstore::SegmentFooter>, Option<Segment>), LoadError> {
    let footer = store.read_footer(topic, index, last).await?;
    let tail = match store.read_segment(topic, index, last.base_offset).await {
        Ok(seg) => Some(seg),
        Err(e @ StoreError::Corrupt { .. }) => return Err(e.into()),
        Err(e) => {
            warn!(topic, partition = index, error = %e, "newest segment unreadable; idempotent producers start unknown");
            None
        }
    };
    Ok((Some(footer), tail))
}

/// Writes the `.index` of every listed segment that has none (the Go Kafscale
/// and other readers of the bucket use it). Best effort and in the
/// background: the partition serves without it, and a failure is retried at
/// the next load.
async fn rebuild_missing_indexes(
    store: &kafscale_segstore::SegmentStore,
    topic: &str,
    index: i32,
    segs: &[SegmentMeta],
) {
    let have = match store.list_indexes(topic, index).await {
        Ok(h) => h,
        Err(e) => {
            warn!(topic, partition = index, error = %e, "listing indexes failed; not rebuilding");
            return;
        }
    };
    let missing: Vec<i64> = segs
        .iter()
        .map(|s| s.base_offset)
        .filter(|b| have.binary_search(b).is_err())
        .collect();
    if missing.is_empty() {
        return;
    }
    let (store, topic) = (store.clone(), topic.to_string());
    tokio::spawn(async move {
        for base in missing {
            match store.rebuild_index(&topic, index, base).await {
                Ok(()) => info!(
                    topic,
                    partition = index,
                    base_offset = base,
                    "missing segment index rebuilt"
                ),
                Err(e) => {
                    warn!(topic, partition = index, base_offset = base, error = %e, "rebuilding a segment index failed")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_window_is_bounded_by_count_and_bytes() {
        let seg = |base, size| Obj {
            base,
            gen: 0,
            size,
            last: None,
        };
        let many: Vec<Obj> = (0..100).map(|i| seg(i * 10, 1_000)).collect();
        let w = tail_window(&many);
        assert_eq!(
            (w.len(), w[0].base),
            (TAIL_SEGMENTS, (100 - TAIL_SEGMENTS as i64) * 10)
        );
        let big = [
            seg(0, TAIL_BYTES),
            seg(10, TAIL_BYTES / 2),
            seg(20, TAIL_BYTES / 2),
        ];
        assert_eq!(tail_window(&big).len(), 2);
        // The newest segment is read whatever its size.
        assert_eq!(tail_window(&[seg(0, 1), seg(5, 2 * TAIL_BYTES)]).len(), 1);
        assert!(tail_window(&[]).is_empty());
    }

    #[test]
    fn restores_ranges_from_listing_and_footer() {
        let segs = [
            SegmentMeta {
                base_offset: 0,
                size: 10,
            },
            SegmentMeta {
                base_offset: 5,
                size: 10,
            },
        ];
        let none = Manifest::default();
        let (objs, garbage) = merge_objects(&segs, &none, &[]);
        assert!(garbage.is_empty());
        let (refs, next) = restore(&objs, &[], Some(9)).unwrap();
        assert_eq!(
            (refs[0].base, refs[0].last, refs[1].base, refs[1].last, next),
            (0, 4, 5, 9, 10)
        );
        assert_eq!(restore(&[], &[], None).unwrap().1, 0);
        assert!(restore(&objs, &[], Some(3)).is_err());
    }

    #[test]
    fn a_manifest_replaces_the_segments_it_covers() {
        let seg = |base_offset| SegmentMeta {
            base_offset,
            size: 10,
        };
        // Segments 0, 10, 20, 30 (newest); a cleaning replaced 0..=9 with nothing
        // and 10..=29 with object 7; 0 and 20 were not deleted yet; object 9
        // at 10 is a cut-short cleaning's.
        let segs = [seg(0), seg(20), seg(30)];
        let range = |base, last, gen| CompactedRange {
            base,
            last,
            gen,
            bytes: 5,
        };
        let manifest = Manifest {
            ranges: vec![range(0, 9, 0), range(10, 29, 7)],
            horizon_ms: 0,
        };
        let compacted = [
            CompactedMeta {
                base: 10,
                gen: 7,
                size: 5,
            },
            CompactedMeta {
                base: 10,
                gen: 9,
                size: 5,
            },
        ];
        let (objs, mut garbage) = merge_objects(&segs, &manifest, &compacted);
        garbage.sort();
        assert_eq!(garbage, vec![(0, 0), (10, 9), (20, 0)]);
        let (refs, next) = restore(&objs, &manifest.ranges, Some(35)).unwrap();
        assert_eq!(
            refs.iter()
                .map(|r| (r.base, r.last, r.gen))
                .collect::<Vec<_>>(),
            vec![(10, 29, 7), (30, 35, 0)]
        );
        assert_eq!(next, 36);
        // The empty range before the first segment is still the log's.
        assert_eq!(start_over_empty_ranges(10, &manifest.ranges, 0), 0);
        assert_eq!(start_over_empty_ranges(10, &manifest.ranges, 5), 10);
        assert_eq!(start_over_empty_ranges(30, &manifest.ranges, 0), 30);
        // A plain segment before an empty range ends where the range starts.
        let m2 = Manifest {
            ranges: vec![range(10, 19, 0)],
            horizon_ms: 0,
        };
        let (objs, _) = merge_objects(&[seg(0), seg(20)], &m2, &[]);
        let (refs, _) = restore(&objs, &m2.ranges, Some(25)).unwrap();
        assert_eq!((refs[0].last, refs[1].base), (9, 20));
    }

    #[test]
    fn committed_next_offset_wins_only_when_ahead() {
        let segs = vec![SegRef {
            base: 0,
            last: 9,
            bytes: 100,
            max_ts: None,
            gen: 0,
        }];
        let c = |next_offset, log_start| {
            Some(Committed {
                next_offset,
                log_start,
            })
        };
        // The embedded store commits nothing: the segments alone count.
        let (d, next, start) = with_committed(segs.clone(), 10, None, false);
        assert_eq!((d.len(), next, start), (1, 10, 0));
        // ...but a log start DeleteRecords moved: inside a segment, past the end.
        let (d, next, start) = with_committed(segs.clone(), 10, c(0, 4), false);
        assert_eq!((d.len(), next, start), (1, 10, 4));
        let (d, next, start) = with_committed(segs.clone(), 10, c(0, 30), false);
        assert_eq!((d.len(), next, start), (0, 10, 10));
        assert_eq!(with_committed(segs.clone(), 10, c(7, 0), true).1, 10);
        assert_eq!(with_committed(segs.clone(), 10, c(12, 0), true).1, 12);
        assert_eq!(with_committed(Vec::new(), 0, c(5, 0), true).1, 5);
        // Segments of a deleted namesake: not served, the log starts after them.
        let (d, next, start) = with_committed(segs.clone(), 10, None, true);
        assert_eq!((d.len(), next, start), (0, 10, 10));
        let (d, next, start) = with_committed(segs.clone(), 10, c(0, 0), true);
        assert_eq!((d.len(), next, start), (0, 10, 10));
        // Below the committed log start: dropped; above: served.
        let mut two = segs.clone();
        two.push(SegRef {
            base: 10,
            last: 19,
            bytes: 100,
            max_ts: None,
            gen: 0,
        });
        let (d, next, start) = with_committed(two, 20, c(20, 10), true);
        assert_eq!((d.len(), d[0].base, next, start), (1, 10, 20, 10));
    }
}
