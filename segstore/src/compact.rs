//! The log cleaner's rewrite of segments, without I/O (docs/compaction.md):
//! which records of a group of segments stay, and the segment that holds them.
//!
//! A record stays unless
//! - a newer record with the same key is in the cleaned range (the offset map),
//! - it has no key (Kafka's cleaner drops those: a compacted topic cannot hold
//!   them, and Kafka refuses them at produce time),
//! - it is a tombstone whose batch's delete horizon has passed (KIP-534: the
//!   first cleaning that keeps a tombstone marks its batch with
//!   now + delete.retention.ms; a later cleaning after that time drops it).
//!
//! Batches keep their offsets, producer id, epoch and base sequence, so
//! consumers see offsets with gaps and idempotent-producer state read back from
//! the log is what it was; the last batch of an active producer stays even
//! when none of its records does (empty, as Kafka keeps it). Compressed and
//! control batches are kept as they are: their records are not read, so their
//! keys neither supersede nor are superseded (compaction is best effort; the
//! newest value of every key is always kept).

use std::collections::HashMap;

use kafscale_codec::batch::BatchHeader;
use kafscale_codec::records::{delete_horizon, readable, rebuild, records};

use crate::format::index::DEFAULT_INDEX_INTERVAL;
use crate::format::segment::{SealedSegment, Segment, SegmentBuilder};

/// What a cleaning needs besides the segments.
#[derive(Debug, Clone, Default)]
pub struct CleanPolicy {
    /// Wall-clock time of the cleaning (ms).
    pub now_ms: i64,
    /// The topic's delete.retention.ms.
    pub delete_retention_ms: i64,
    /// Active idempotent producers: id → base offset of the last batch they
    /// wrote. That batch stays (empty if none of its records does), so the
    /// producer's state read back from the log survives, as in Kafka.
    pub last_batches: HashMap<i64, i64>,
}

/// What a cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_in: u64,
    pub records_kept: u64,
    pub tombstones_removed: u64,
    pub keyless_removed: u64,
    /// The earliest delete horizon (ms) of a tombstone kept, if any.
    pub horizon_ms: Option<i64>,
}

/// The newest offset of every key seen (uncompressed batches), built from the
/// dirty part of the log (Kafka's offset map; keys are copied, so the segments
/// need not stay in memory).
pub type OffsetMap = HashMap<Vec<u8>, i64>;

/// The batches of a segment with their headers.
fn batches(seg: &Segment) -> impl Iterator<Item = (&[u8], Option<BatchHeader>)> {
    seg.batches.iter().filter_map(move |b| {
        let bytes = seg
            .data
            .get(b.pos as usize..(b.pos as usize).saturating_add(b.len as usize))?;
        Some((bytes, BatchHeader::parse(bytes).ok()))
    })
}

/// Adds the keys of `seg` (read oldest first) to the map.
pub fn add_to_offset_map(map: &mut OffsetMap, seg: &Segment) {
    for (bytes, h) in batches(seg) {
        let Some(h) = h else { continue };
        for r in records(bytes, &h).unwrap_or_default() {
            if let Some(k) = r.key {
                match map.get_mut(k) {
                    Some(o) => *o = (*o).max(r.offset),
                    None => {
                        map.insert(k.to_vec(), r.offset);
                    }
                }
            }
        }
    }
}

/// Cleans one group of consecutive segments into one segment; `None` when
/// nothing in them stays.
pub fn clean_group(
    group: &[Segment],
    map: &OffsetMap,
    policy: &CleanPolicy,
    stats: &mut CleanStats,
) -> Option<SealedSegment> {
    let created = group
        .iter()
        .map(|s| s.created_ms)
        .max()
        .unwrap_or(policy.now_ms);
    let first = group.first().map_or(0, |s| s.base_offset);
    let capacity: usize = group.iter().map(|s| s.size()).sum();
    let mut out = SegmentBuilder::new(first, created, capacity);
    for seg in group {
        stats.bytes_in += seg.size() as u64;
        for (bytes, h) in batches(seg) {
            let Some(h) = h else { continue };
            let Some(rs) = records(bytes, &h).filter(|_| readable(&h)) else {
                // Compressed, control or unreadable: kept as it is.
                keep(&mut out, stats, bytes, &h);
                continue;
            };
            stats.records_in += rs.len() as u64;
            let horizon = delete_horizon(&h);
            let mut kept = Vec::with_capacity(rs.len());
            let mut needs_horizon = false;
            for r in &rs {
                let Some(k) = r.key else {
                    stats.keyless_removed += 1;
                    continue;
                };
                if map.get(k).is_some_and(|newest| *newest > r.offset) {
                    continue;
                }
                if r.tombstone {
                    match horizon {
                        Some(at) if policy.now_ms > at => {
                            stats.tombstones_removed += 1;
                            continue;
                        }
                        Some(at) => note_horizon(stats, at),
                        None => needs_horizon = true,
                    }
                }
                kept.push(*r);
            }
            stats.records_kept += kept.len() as u64;
            if kept.len() == rs.len() && !needs_horizon {
                keep(&mut out, stats, bytes, &h);
                continue;
            }
            let last_of_producer = h.producer_id >= 0
                && policy.last_batches.get(&h.producer_id) == Some(&h.base_offset);
            if kept.is_empty() && !last_of_producer {
                continue;
            }
            let new_horizon = needs_horizon.then(|| {
                let at = policy
                    .now_ms
                    .saturating_add(policy.delete_retention_ms.max(0));
                note_horizon(stats, at);
                at
            });
            let rebuilt = rebuild(&h, &kept, new_horizon);
            if let Ok(rh) = BatchHeader::parse(&rebuilt) {
                keep(&mut out, stats, &rebuilt, &rh);
            }
        }
    }
    (!out.is_empty()).then(|| out.finish(DEFAULT_INDEX_INTERVAL))
}

fn keep(out: &mut SegmentBuilder, stats: &mut CleanStats, batch: &[u8], h: &BatchHeader) {
    out.append_stored(batch, h);
    stats.bytes_out += batch.len() as u64;
}

fn note_horizon(stats: &mut CleanStats, at: i64) {
    stats.horizon_ms = Some(stats.horizon_ms.map_or(at, |h| h.min(at)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::records::build_keyed_batch;

    fn segment(batches: &[Vec<u8>]) -> Segment {
        let mut b = SegmentBuilder::new(0, 5, 1024);
        for raw in batches {
            let h = BatchHeader::parse(raw).unwrap();
            b.append_stored(raw, &h);
        }
        b.finish(DEFAULT_INDEX_INTERVAL).segment
    }

    fn map_of(segs: &[Segment]) -> OffsetMap {
        let mut map = OffsetMap::new();
        for s in segs {
            add_to_offset_map(&mut map, s);
        }
        map
    }

    fn contents(seg: &Segment) -> Vec<(i64, Option<Vec<u8>>, bool)> {
        let mut out = Vec::new();
        for (bytes, h) in batches(seg) {
            let h = h.unwrap();
            for r in records(bytes, &h).unwrap() {
                out.push((r.offset, r.key.map(|k| k.to_vec()), r.tombstone));
            }
        }
        out
    }

    #[test]
    fn keeps_the_newest_record_per_key_and_marks_then_drops_tombstones() {
        let a = segment(&[
            build_keyed_batch(0, 10, &[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"1"))]),
            build_keyed_batch(2, 10, &[(None, Some(b"x")), (Some(b"c"), Some(b"1"))]),
        ]);
        let b = segment(&[
            build_keyed_batch(4, 20, &[(Some(b"a"), Some(b"2")), (Some(b"b"), None)]),
            build_keyed_batch(6, 20, &[(Some(b"d"), Some(b"1"))]),
        ]);
        let group = [a, b];
        let map = map_of(&group);
        let policy = CleanPolicy {
            now_ms: 1_000,
            delete_retention_ms: 500,
            ..Default::default()
        };
        let mut stats = CleanStats::default();
        let out = clean_group(&group, &map, &policy, &mut stats).unwrap();
        let seg = Segment::parse(out.segment.data.clone()).unwrap();
        assert_eq!(
            contents(&seg),
            vec![
                (3, Some(b"c".to_vec()), false),
                (4, Some(b"a".to_vec()), false),
                (5, Some(b"b".to_vec()), true),
                (6, Some(b"d".to_vec()), false),
            ]
        );
        assert_eq!((seg.base_offset, seg.last_offset), (2, 6));
        assert_eq!(stats.keyless_removed, 1);
        assert_eq!(stats.horizon_ms, Some(1_500));
        // Before the horizon the tombstone stays; after it, it goes.
        let again = [seg];
        let map = map_of(&again);
        let mut s2 = CleanStats::default();
        let p2 = CleanPolicy {
            now_ms: 1_400,
            ..policy.clone()
        };
        let kept = clean_group(&again, &map, &p2, &mut s2).unwrap();
        assert_eq!(contents(&kept.segment).len(), 4);
        assert_eq!(s2.horizon_ms, Some(1_500));
        let mut s3 = CleanStats::default();
        let p3 = CleanPolicy {
            now_ms: 1_501,
            ..policy
        };
        let gone = clean_group(&again, &map, &p3, &mut s3).unwrap();
        assert_eq!(
            contents(&gone.segment)
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            vec![3, 4, 6]
        );
        assert_eq!((s3.tombstones_removed, s3.horizon_ms), (1, None));
    }

    #[test]
    fn an_active_producers_last_batch_stays_empty_and_nothing_left_is_none() {
        let mut idem = build_keyed_batch(0, 10, &[(Some(b"k"), Some(b"1"))]);
        // producer id 7, epoch 0, base sequence 3 (the CRC is recomputed below).
        idem[43..51].copy_from_slice(&7i64.to_be_bytes());
        idem[51..53].copy_from_slice(&0i16.to_be_bytes());
        idem[53..57].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&idem[21..]);
        idem[17..21].copy_from_slice(&crc.to_be_bytes());
        let group = [segment(&[
            idem,
            build_keyed_batch(1, 10, &[(Some(b"k"), Some(b"2"))]),
        ])];
        let map = map_of(&group);
        let policy = CleanPolicy {
            last_batches: [(7, 0)].into(),
            ..Default::default()
        };
        let mut stats = CleanStats::default();
        let out = clean_group(&group, &map, &policy, &mut stats).unwrap();
        let seg = Segment::parse(out.segment.data).unwrap();
        assert_eq!(seg.batches.len(), 2);
        let (bytes, h) = batches(&seg).next().unwrap();
        let h = h.unwrap();
        assert_eq!(
            (
                h.producer_id,
                h.base_sequence,
                h.record_count,
                h.last_offset()
            ),
            (7, 3, 0, 0)
        );
        assert!(records(bytes, &h).unwrap().is_empty());
        // Not active: the batch goes; a group of superseded records only is None.
        let only_old = [segment(&[build_keyed_batch(
            0,
            10,
            &[(Some(b"k"), Some(b"1"))],
        )])];
        let newer = segment(&[build_keyed_batch(5, 10, &[(Some(b"k"), Some(b"2"))])]);
        let both = [only_old[0].clone(), newer];
        let map = map_of(&both);
        assert!(clean_group(&only_old, &map, &CleanPolicy::default(), &mut stats).is_none());
    }
}
