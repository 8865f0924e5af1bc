//! The log cleaner for `cleanup.policy=compact` (and `compact,delete`): each
//! shard, every `KAFSCALE_LOG_CLEANER_BACKOFF_MS`, looks at its partitions of
//! compacted topics that this broker owns, and rewrites the closed segments of
//! those whose dirty part is large enough (docs/compaction.md).
//!
//! One cleaning of a partition:
//! 1. The cleanable range is every durable segment but the newest (its footer
//!    is recovery's next offset, and its batches the producers' tail), up to
//!    the first segment younger than `min.compaction.lag.ms`. It is cleaned
//!    when its dirty bytes (after the end of the last compacted range, Kafka's
//!    cleaner checkpoint) reach `min.cleanable.dirty.ratio` of it, when a
//!    kept tombstone's delete horizon has passed, or when the oldest dirty
//!    segment is older than `max.compaction.lag.ms`.
//! 2. The segments are read (through the shard's cache), the newest offset of
//!    every key is mapped, and consecutive segments are rewritten in groups of
//!    at most `segment.bytes` (`kafscale_segstore::compact`). Each group's
//!    output is written create-only under a new name (`segment-{base}-c{gen}`).
//! 3. The partition's manifest (the ranges and their objects) is committed to
//!    the metadata store, fenced by this broker's claim: a broker that lost the
//!    partition cannot switch it. Only then does the in-memory segment list
//!    change, in one step with no await, so a read sees the old list or the new.
//! 4. The replaced objects are deleted once no read that took the old list is
//!    in flight (`Partition::pin`), on this or a later pass. Other brokers never
//!    read a partition they do not own (they answer NOT_LEADER_OR_FOLLOWER).
//!
//! A crash before the commit leaves new objects no manifest names: the next
//! load deletes them. A crash after it leaves replaced segments inside a
//! committed range: recovery ignores and deletes them. Either way every offset
//! is served from exactly one object.

use std::rc::Rc;
use std::time::Duration;

use kafscale_segstore::compact::{
    add_to_offset_map, clean_group, CleanPolicy, CleanStats, OffsetMap,
};
use kafscale_segstore::SEGMENT_HEADER_LEN;
use tracing::{debug, info, warn};

use super::logs::Logs;
use super::read::segment;
use super::timeindex::max_ts_of;
use super::{Load, Partition, SegRef};
use crate::errors::KafkaError;
use crate::io::CallError;
use crate::metadata::{CompactedRange, Manifest, MetaError};
use crate::placement::partition_shard;

/// The shard's cleaner loop.
pub async fn cleaner_ticker(logs: Rc<Logs>) {
    let interval = logs.settings.cleaner_backoff.max(Duration::from_millis(10));
    loop {
        logs.clock.sleep(interval).await;
        if logs.is_shutting_down() {
            return;
        }
        clean_all(&logs).await;
    }
}

async fn clean_all(logs: &Rc<Logs>) {
    let cluster = logs.cluster();
    let mut targets = Vec::new();
    for t in cluster.topics.values() {
        if !t.settings(logs.settings.segment_bytes).compact {
            continue;
        }
        for i in 0..t.partitions {
            if partition_shard(&t.name, i, logs.shards) == logs.shard && cluster.owns(t, i) {
                targets.push((t.name.clone(), i));
            }
        }
    }
    for (topic, index) in targets {
        if logs.is_shutting_down() {
            return;
        }
        // Loads partitions nobody has touched since start, so a compacted topic
        // is cleaned without a client.
        if let Ok(p) = super::partition(logs, &topic, index).await {
            if let Err(e) = clean_partition(logs, &p).await {
                warn!(topic = %p.topic, partition = p.index, error = %e, "log cleaning failed; retried on the next pass");
            }
        }
    }
}

/// Why a cleaning stopped.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("reading a segment: {0}")]
    Read(KafkaError),
    #[error("writing a compacted segment: {0}")]
    Write(String),
    #[error("committing the manifest: {0}")]
    Commit(String),
    #[error("the partition moved to another broker")]
    Fenced,
}

/// Resets the partition's `cleaning` flag however the cleaning ends.
struct Cleaning<'a>(&'a Partition);

impl Drop for Cleaning<'_> {
    fn drop(&mut self) {
        self.0.st.borrow_mut().cleaning = false;
    }
}

/// Dirty segment bytes one cleaning takes at most (the offset map holds their
/// keys); a larger dirty part is cleaned over several passes.
const DIRTY_BYTES_PER_PASS: u64 = 512 << 20;

/// One group of consecutive source segments and what it became.
struct Group {
    sources: Vec<SegRef>,
    base: i64,
    last: i64,
    /// The stored output: its object id, size and max timestamp.
    out: Option<(u64, u64, Option<i64>)>,
    /// The single compacted source came out unchanged: it stays as it is.
    unchanged: bool,
}

/// One cleaning pass over `p` (see the module comment). Ok(true) if it
/// committed a new manifest.
pub async fn clean_partition(logs: &Rc<Logs>, p: &Rc<Partition>) -> Result<bool, CleanError> {
    delete_retired(logs, p).await;
    super::retention::delete_doomed(logs, p).await;
    let settings = p.settings.get();
    let now = logs.clock.wall_ms();
    let (candidates, clean_end, horizon_due) = {
        let mut st = p.st.borrow_mut();
        if !settings.compact
            || st.deleted
            || st.releasing
            || st.cleaning
            || !matches!(st.load, Load::Ready)
            || st.durable.len() < 2
            || !logs.meta.writable()
        {
            return Ok(false);
        }
        st.cleaning = true;
        let n = st.durable.len() - 1;
        let horizon = st.manifest.horizon_ms;
        (
            st.durable[..n].to_vec(),
            st.manifest.clean_end().unwrap_or(i64::MIN),
            horizon > 0 && now > horizon,
        )
    };
    let _cleaning = Cleaning(p);
    // Cut at min.compaction.lag.ms: segments with a record younger than the
    // lag, and everything after them, stay dirty. Already compacted ranges are
    // cleanable whatever the lag (they were cleaned before).
    let mut cleanable: Vec<SegRef> = Vec::with_capacity(candidates.len());
    for seg in candidates {
        if seg.base >= clean_end && settings.min_compaction_lag_ms > 0 {
            let max = max_ts_of(logs, p, &seg).await.map_err(CleanError::Read)?;
            if now.saturating_sub(max) < settings.min_compaction_lag_ms {
                break;
            }
        }
        cleanable.push(seg);
    }
    let total: u64 = cleanable.iter().map(|s| s.bytes).sum();
    let dirty: Vec<&SegRef> = cleanable.iter().filter(|s| s.base >= clean_end).collect();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.bytes).sum();
    let by_ratio = dirty_bytes > 0
        && u128::from(dirty_bytes) * 1_000_000
            >= u128::from(settings.min_cleanable_ratio_ppm) * u128::from(total.max(1));
    let by_max_lag = match dirty.first() {
        Some(first) if settings.max_compaction_lag_ms < i64::MAX => {
            let max = max_ts_of(logs, p, first).await.map_err(CleanError::Read)?;
            now.saturating_sub(max) > settings.max_compaction_lag_ms
        }
        _ => false,
    };
    if cleanable.is_empty() || !(by_ratio || horizon_due || by_max_lag) {
        return Ok(false);
    }
    // At most DIRTY_BYTES_PER_PASS of dirty segments per pass (at least one):
    // the offset map holds their keys. The range cleaned ends with them; the
    // rest stays dirty for the next pass.
    let mut window = 0u64;
    let mut end = cleanable.len();
    for (i, s) in cleanable.iter().enumerate() {
        if s.base < clean_end {
            continue;
        }
        if window > 0 && window.saturating_add(s.bytes) > DIRTY_BYTES_PER_PASS {
            end = i;
            break;
        }
        window = window.saturating_add(s.bytes);
    }
    cleanable.truncate(end);
    // Every object this pass reads stays until it ends (see `Partition::pin`).
    let pin = p.pin();
    let mut map = OffsetMap::new();
    for seg in cleanable.iter().filter(|s| s.base >= clean_end) {
        let s = segment(logs, seg.key(p)).await.map_err(CleanError::Read)?;
        add_to_offset_map(&mut map, &s);
    }
    let policy = CleanPolicy {
        now_ms: now,
        delete_retention_ms: settings.delete_retention_ms,
        last_batches: p.st.borrow().producers.last_batches(),
    };
    let mut stats = CleanStats::default();
    let mut groups: Vec<Group> = Vec::new();
    let mut from = 0;
    while from < cleanable.len() {
        // Consecutive segments up to segment.bytes of sources (at least one).
        let mut to = from + 1;
        let mut bytes = cleanable[from].bytes;
        while to < cleanable.len()
            && bytes.saturating_add(cleanable[to].bytes) <= settings.segment_bytes as u64
        {
            bytes += cleanable[to].bytes;
            to += 1;
        }
        let sources = cleanable[from..to].to_vec();
        from = to;
        let mut segments = Vec::with_capacity(sources.len());
        for seg in &sources {
            match segment(logs, seg.key(p)).await {
                Ok(s) => segments.push(s),
                Err(e) => {
                    forget_outputs(logs, p, &groups).await;
                    return Err(CleanError::Read(e));
                }
            }
        }
        let out = clean_group(&segments, &map, &policy, &mut stats);
        let unchanged = sources.len() == 1
            && sources[0].gen != 0
            && out.as_ref().is_some_and(|o| {
                segments[0].data.get(SEGMENT_HEADER_LEN..)
                    == o.segment.data.get(SEGMENT_HEADER_LEN..)
            });
        let mut group = Group {
            base: sources[0].base,
            last: sources[sources.len() - 1].last,
            sources,
            out: None,
            unchanged,
        };
        if let Some(sealed) = out.filter(|_| !unchanged) {
            // Written now (create-only, a new name), so that one group's
            // segments at a time are in memory.
            let gen = new_gen();
            let store = logs.store.clone();
            let (topic, index, base) = (p.topic.to_string(), p.index, group.base);
            let res = logs
                .io
                .call(async move {
                    store
                        .put_object(&topic, index, base, gen, &sealed)
                        .await
                        .map(|()| {
                            let seg = &sealed.segment;
                            (
                                seg.size() as u64,
                                seg.batches.iter().map(|b| b.max_timestamp).max(),
                            )
                        })
                })
                .await;
            match res {
                Ok((size, max_ts)) => group.out = Some((gen, size, max_ts)),
                Err(e) => {
                    // What of this group's PUTs may have landed goes too.
                    group.out = Some((gen, 0, None));
                    groups.push(group);
                    forget_outputs(logs, p, &groups).await;
                    return Err(CleanError::Write(e.to_string()));
                }
            }
        }
        groups.push(group);
    }
    drop(pin);
    let manifest = next_manifest(p, &groups, &stats);
    let (claim, meta) = (p.st.borrow().claim.unwrap_or_default(), logs.meta.clone());
    let (topic, id, index, m) = (p.topic.clone(), p.topic_id, p.index, manifest.clone());
    let committed = logs
        .io
        .call(async move { meta.commit_compaction(&topic, id, index, &m, claim).await })
        .await;
    match committed {
        Ok(()) => {}
        Err(CallError::Failed(MetaError::Fenced { .. })) => {
            // The objects are the next owner's garbage (its load deletes them).
            warn!(topic = %p.topic, partition = p.index, "log cleaning: partition lost to another broker; not switching");
            p.st.borrow_mut().claim = None;
            logs.drop_partition(p, KafkaError::NotLeaderOrFollower);
            return Err(CleanError::Fenced);
        }
        Err(e) => {
            forget_outputs(logs, p, &groups).await;
            return Err(CleanError::Commit(e.to_string()));
        }
    }
    let rewritten = switch(logs, p, &groups, manifest);
    let m = &logs.metrics;
    m.cleaner_bytes_read
        .set(m.cleaner_bytes_read.get() + stats.bytes_in);
    m.cleaner_bytes_written
        .set(m.cleaner_bytes_written.get() + stats.bytes_out);
    m.cleaner_segments_rewritten
        .set(m.cleaner_segments_rewritten.get() + rewritten);
    m.cleaner_runs.set(m.cleaner_runs.get() + 1);
    info!(topic = %p.topic, partition = p.index, segments = rewritten, groups = groups.len(),
          records_in = stats.records_in, records_kept = stats.records_kept,
          tombstones_removed = stats.tombstones_removed, keyless_removed = stats.keyless_removed,
          bytes_in = stats.bytes_in, bytes_out = stats.bytes_out, "log cleaned");
    delete_retired(logs, p).await;
    Ok(true)
}

/// A random, non-zero object id: names are never reused, so a create-only PUT
/// never meets an earlier attempt's object.
fn new_gen() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0.max(1)
}

/// The manifest after this cleaning: the groups' ranges, and the ranges of the
/// previous manifest that kept nothing and lie outside them and not below the
/// log start (their replaced segments may still exist: recovery must keep
/// ignoring them). Adjacent ranges that kept nothing are merged.
fn next_manifest(p: &Partition, groups: &[Group], stats: &CleanStats) -> Manifest {
    let st = p.st.borrow();
    let mut ranges: Vec<CompactedRange> = groups
        .iter()
        .map(|g| {
            let (gen, bytes) = match (&g.out, g.unchanged) {
                (_, true) => (g.sources[0].gen, g.sources[0].bytes),
                (Some((gen, size, _)), false) => (*gen, *size),
                (None, false) => (0, 0),
            };
            CompactedRange {
                base: g.base,
                last: g.last,
                gen,
                bytes,
            }
        })
        .collect();
    let covered = |r: &CompactedRange| groups.iter().any(|g| g.base <= r.last && r.base <= g.last);
    for r in &st.manifest.ranges {
        if r.gen == 0 && !covered(r) && r.last >= st.log_start {
            ranges.push(*r);
        }
    }
    ranges.sort_by_key(|r| r.base);
    let mut merged: Vec<CompactedRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if prev.gen == 0 && r.gen == 0 && prev.last + 1 == r.base => {
                prev.last = r.last
            }
            _ => merged.push(r),
        }
    }
    Manifest {
        ranges: merged,
        horizon_ms: stats.horizon_ms.unwrap_or(0),
    }
}

/// Replaces the groups' sources in the in-memory log with their outputs, in one
/// step; the replaced objects are retired. Returns how many segments were
/// replaced.
fn switch(logs: &Rc<Logs>, p: &Rc<Partition>, groups: &[Group], manifest: Manifest) -> u64 {
    let mut st = p.st.borrow_mut();
    if st.deleted {
        return 0;
    }
    let version = st.list_version + 1;
    let in_group = |s: &SegRef| groups.iter().any(|g| g.base <= s.base && s.base <= g.last);
    let mut outputs = Vec::new();
    let mut orphans = Vec::new();
    for g in groups.iter().filter(|g| !g.unchanged) {
        let Some((gen, size, max_ts)) = g.out else {
            continue;
        };
        let present = st
            .durable
            .iter()
            .any(|s| g.base <= s.base && s.base <= g.last);
        if present {
            outputs.push(SegRef {
                base: g.base,
                last: g.last,
                bytes: size,
                max_ts,
                gen,
            });
        } else {
            // Retention removed every source meanwhile.
            orphans.push((g.base, gen));
        }
    }
    let unchanged: Vec<(i64, u64)> = groups
        .iter()
        .filter(|g| g.unchanged)
        .map(|g| (g.sources[0].base, g.sources[0].gen))
        .collect();
    let mut replaced = Vec::new();
    let mut kept = Vec::with_capacity(st.durable.len());
    for s in st.durable.drain(..) {
        if in_group(&s) && !unchanged.contains(&(s.base, s.gen)) {
            replaced.push(s);
        } else {
            kept.push(s);
        }
    }
    kept.extend(outputs);
    kept.sort_by_key(|s| s.base);
    st.durable = kept;
    st.list_version = version;
    st.manifest = manifest;
    st.doomed.extend(orphans);
    st.retired
        .extend(replaced.iter().map(|s| (version, (s.base, s.gen))));
    drop(st);
    let mut cache = logs.cache.borrow_mut();
    for s in &replaced {
        cache.remove(&s.key(p));
    }
    replaced.len() as u64
}

/// Deletes the new objects of a cleaning that will not be committed (best
/// effort: what stays is deleted by the next load as unnamed).
async fn forget_outputs(logs: &Rc<Logs>, p: &Rc<Partition>, groups: &[Group]) {
    for g in groups {
        if let Some((gen, ..)) = &g.out {
            let store = logs.store.clone();
            let (topic, index, base, gen) = (p.topic.to_string(), p.index, g.base, *gen);
            let _ = logs
                .io
                .call(async move { store.delete_object(&topic, index, base, gen).await })
                .await;
        }
    }
}

/// Deletes the objects the cleaner replaced that no read in flight can still
/// use; the others wait for a later pass.
async fn delete_retired(logs: &Rc<Logs>, p: &Rc<Partition>) {
    let ready: Vec<(i64, u64)> = {
        let mut st = p.st.borrow_mut();
        if st.deleted {
            st.retired.clear();
            return;
        }
        let retired = std::mem::take(&mut st.retired);
        let (ready, wait): (Vec<_>, Vec<_>) =
            retired.into_iter().partition(|(v, _)| !p.pinned_before(*v));
        st.retired = wait;
        ready.into_iter().map(|(_, o)| o).collect()
    };
    if ready.is_empty() {
        return;
    }
    debug!(topic = %p.topic, partition = p.index, objects = ready.len(), "deleting segments the cleaner replaced");
    p.st.borrow_mut().doomed.extend(ready);
    super::retention::delete_doomed(logs, p).await;
}
