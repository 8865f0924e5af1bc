//! ListOffsets by timestamp. The `.kfs` format records no times, so time bounds
//! come from the batch headers: each durable segment's max timestamp is kept in
//! memory (`SegRef::max_ts`, learned by reading a recovered segment once), and a
//! lookup reads the first segment whose max timestamp reaches the target, then
//! its batches, then (for uncompressed batches) the records' own timestamps.

use std::rc::Rc;

use kafscale_codec::batch::record_timestamps;

use super::logs::Logs;
use super::read::{note_max_ts, segment};
use super::{Partition, SegRef};
use crate::errors::KafkaError;
use kafscale_segstore::Segment;

/// What a timestamp query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLookup {
    /// The first offset whose timestamp is at or after this time (ms).
    AtOrAfter(i64),
    /// The offset of the record with the largest timestamp (ListOffsets v7, -3).
    MaxTimestamp,
}

/// `(offset, timestamp)` answering `q`, or `None` when no record qualifies (Kafka
/// then answers offset -1, timestamp -1). Errors are Kafka codes.
pub async fn offset_for_time(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    q: TimeLookup,
) -> Result<Option<(i64, i64)>, KafkaError> {
    match q {
        TimeLookup::AtOrAfter(t) => at_or_after(logs, p, t).await,
        TimeLookup::MaxTimestamp => max_timestamp(logs, p).await,
    }
}

/// The durable segment that starts at or after `from`, if any.
fn next_segment(p: &Partition, from: i64) -> Result<Option<SegRef>, KafkaError> {
    let st = p.st.borrow();
    if st.deleted {
        return Err(KafkaError::UnknownTopicOrPartition);
    }
    let i = st.durable.partition_point(|s| s.last < from);
    Ok(st.durable.get(i).copied())
}

/// The segment's max timestamp, reading the segment if it is not known yet.
pub(crate) async fn max_ts_of(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    seg: &SegRef,
) -> Result<i64, KafkaError> {
    if let Some(t) = seg.max_ts {
        return Ok(t);
    }
    let _pin = p.pin();
    let s = segment(logs, seg.key(p)).await?;
    Ok(note_max_ts(p, seg, &s).unwrap_or(-1))
}

async fn at_or_after(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    t: i64,
) -> Result<Option<(i64, i64)>, KafkaError> {
    // Every segment this lookup meets stays readable until it ends (see `Pin`).
    let _pin = p.pin();
    let mut from = p.st.borrow().log_start;
    while let Some(seg) = next_segment(p, from)? {
        from = seg.last + 1;
        let max = match max_ts_of(logs, p, &seg).await {
            Ok(m) => m,
            // Deleted by retention meanwhile: go on with what is left.
            Err(_) if p.st.borrow().log_start > seg.base => continue,
            Err(code) => return Err(code),
        };
        if max < t {
            continue;
        }
        let s = match segment(logs, seg.key(p)).await {
            Ok(s) => s,
            Err(_) if p.st.borrow().log_start > seg.base => continue,
            Err(code) => return Err(code),
        };
        let log_start = p.st.borrow().log_start;
        if let Some(hit) = first_at_or_after(&s, t, log_start) {
            return Ok(Some(hit));
        }
    }
    // Then what is durable in the commit log, not yet in the store's files.
    let log_start = p.st.borrow().log_start;
    for s in logged(p, from) {
        if let Some(hit) = first_at_or_after(&s, t, log_start) {
            return Ok(Some(hit));
        }
    }
    Ok(None)
}

/// Segments durable in the shard's commit log and not yet written out
/// (`commit_log.rs`), from the one holding `from`: they follow the durable list.
fn logged(p: &Partition, from: i64) -> Vec<Segment> {
    let st = p.st.borrow();
    st.pending
        .iter()
        .take(st.logged)
        .filter(|s| s.segment.last_offset >= from)
        .map(|s| s.segment.clone())
        .collect()
}

/// The first record of `s` at or after `log_start` with a timestamp of at
/// least `t`.
fn first_at_or_after(s: &Segment, t: i64, log_start: i64) -> Option<(i64, i64)> {
    for b in s.batches.iter().filter(|b| b.max_timestamp >= t) {
        if b.last_offset < log_start {
            continue;
        }
        let raw = &s.data[b.pos as usize..(b.pos + b.len) as usize];
        match record_timestamps(raw) {
            Some(records) => {
                if let Some(&hit) = records.iter().find(|(o, ts)| *o >= log_start && *ts >= t) {
                    return Some(hit);
                }
            }
            // Compressed: batch precision (documented in docs/protocol.md).
            None => return Some((b.base_offset.max(log_start), b.max_timestamp)),
        }
    }
    None
}

async fn max_timestamp(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
) -> Result<Option<(i64, i64)>, KafkaError> {
    // The segment with the largest max timestamp (the first one on a tie, as Kafka).
    let mut best: Option<(i64, SegRef)> = None;
    let _pin = p.pin();
    let mut from = p.st.borrow().log_start;
    while let Some(seg) = next_segment(p, from)? {
        from = seg.last + 1;
        let max = match max_ts_of(logs, p, &seg).await {
            Ok(m) => m,
            Err(_) if p.st.borrow().log_start > seg.base => continue,
            Err(code) => return Err(code),
        };
        if best.as_ref().is_none_or(|(m, _)| max > *m) {
            best = Some((max, seg));
        }
    }
    // A segment still only in the commit log wins only with a larger time (it
    // comes after every durable one).
    let mut newest: Option<(i64, Segment)> = None;
    for s in logged(p, from) {
        let max = s
            .batches
            .iter()
            .map(|b| b.max_timestamp)
            .max()
            .unwrap_or(-1);
        let top = newest
            .as_ref()
            .map(|(m, _)| *m)
            .or(best.as_ref().map(|(m, _)| *m));
        if top.is_none_or(|m| max > m) {
            newest = Some((max, s));
        }
    }
    let (max, s) = match (newest, best) {
        (Some((max, s)), _) => (max, s),
        (None, Some((max, seg))) => (max, segment(logs, seg.key(p)).await?),
        (None, None) => return Ok(None),
    };
    let Some(b) = s.batches.iter().find(|b| b.max_timestamp == max) else {
        return Ok(None);
    };
    let raw = &s.data[b.pos as usize..(b.pos + b.len) as usize];
    let hit = record_timestamps(raw)
        .and_then(|records| records.into_iter().find(|(_, ts)| *ts == max))
        // Compressed: the batch's last offset, as Kafka answered before KIP-734's fix.
        .unwrap_or((b.last_offset, max));
    Ok(Some(hit))
}
