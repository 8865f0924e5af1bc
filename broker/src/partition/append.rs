//! The produce path on the owning shard: validate a producer's batches, assign
//! offsets, copy them into the active segment buffer, and seal that buffer when it
//! is full, its oldest byte is older than the flush interval, or (on the next
//! append) it is older than the topic's segment.ms.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use kafscale_codec::batch::{stamp_log_append_time, verify_crc, BatchHeader, Batches};
use kafscale_segstore::{SegmentBuilder, DEFAULT_INDEX_INTERVAL};

use super::logs::Logs;
use super::producers::SeqCheck;
use super::Partition;
use crate::errors::{batch_error, KafkaError};

/// Leader epoch written into every batch. Kafscale has one leader per partition
/// and no replication, so the epoch never changes.
pub const LEADER_EPOCH: i32 = 0;

pub struct ProduceOutcome {
    pub base_offset: i64,
    pub log_start: i64,
    /// For `acks=-1`: resolves with an error code once the batch is durable.
    pub durable: Option<oneshot::Receiver<Result<(), KafkaError>>>,
}

/// Validates every batch in `records` before any of them is appended: a request's
/// batches for one partition are taken whole or not at all.
fn validate(records: &[u8]) -> Result<Vec<(BatchHeader, std::ops::Range<usize>)>, KafkaError> {
    let mut out = Vec::with_capacity(1);
    for item in Batches::new(records) {
        let (h, range) = item.map_err(|e| batch_error(&e))?;
        verify_crc(&records[range.clone()], &h).map_err(|e| batch_error(&e))?;
        h.check_producer_batch().map_err(|e| batch_error(&e))?;
        out.push((h, range));
    }
    if out.is_empty() {
        return Err(KafkaError::InvalidRecord);
    }
    Ok(out)
}

/// Kafka refuses a record without a key on a compacted topic (INVALID_RECORD,
/// "Compacted topic cannot accept message without key"): the cleaner could
/// only drop it. Checked for uncompressed batches; compressed ones would have
/// to be decompressed, which this broker never does (the cleaner drops such
/// records, docs/compaction.md).
fn refuse_keyless(
    records: &[u8],
    batches: &[(BatchHeader, std::ops::Range<usize>)],
) -> Result<(), KafkaError> {
    for (h, range) in batches {
        let Some(batch) = records.get(range.clone()) else {
            continue;
        };
        let keyless = match kafscale_codec::records::records(batch, h) {
            Some(rs) => rs.iter().any(|r| r.key.is_none()),
            // Compressed or control: not read here.
            None if kafscale_codec::records::readable(h) => return Err(KafkaError::CorruptMessage),
            None => false,
        };
        if keyless {
            return Err(KafkaError::InvalidRecord);
        }
    }
    Ok(())
}

/// Appends a producer's batches. The caller has reserved buffer space.
pub fn append(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    records: &Bytes,
    acks: i16,
) -> Result<ProduceOutcome, KafkaError> {
    let batches = validate(records)?;
    let settings = p.settings.get();
    if settings.compact {
        refuse_keyless(records, &batches)?;
    }
    // LogAppendTime: the stored batches carry the append time. Only these
    // topics pay for the copy and the CRC.
    let stamped;
    let (records, batches) = if settings.log_append_time {
        let now_ms = logs.clock.wall_ms();
        let mut copy = records.to_vec();
        let mut headers = Vec::with_capacity(batches.len());
        for (h, range) in batches {
            let batch = copy
                .get_mut(range.clone())
                .ok_or(KafkaError::CorruptMessage)?;
            let h = stamp_log_append_time(batch, &h, now_ms).map_err(|e| batch_error(&e))?;
            headers.push((h, range));
        }
        stamped = copy;
        (&stamped[..], headers)
    } else {
        (&records[..], batches)
    };
    // The topic's segment.bytes when it sets one, else the broker's.
    let segment_bytes = settings.segment_bytes;
    let mut sealed = false;
    let mut armed = false;
    let mut added = 0;
    let mut rejected = None;
    let outcome = {
        let mut st = p.st.borrow_mut();
        if st.deleted {
            return Err(st.gone);
        }
        let epoch = st.claim.map_or(LEADER_EPOCH, |c| c.epoch);
        if st.releasing || !logs.meta.writable() {
            // Moving to another broker, or this broker's lease is close to
            // expiring (its claim may be gone by then): the client re-reads
            // Metadata and retries at the partition's owner.
            return Err(KafkaError::NotLeaderOrFollower);
        }
        if st.draining || logs.draining_all() {
            // Drained through BrokerControl: retriable, so clients refresh
            // metadata and retry until the partition is resumed (or moved).
            return Err(KafkaError::NotLeaderOrFollower);
        }
        let mut first = None;
        let mut last = 0;
        let now_ms = logs.clock.wall_ms();
        for (h, range) in &batches {
            match st.producers.check(h) {
                SeqCheck::Append => {}
                SeqCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    // A retry of a batch we already have: answer with its offsets.
                    first.get_or_insert(base_offset);
                    last = last.max(last_offset);
                    continue;
                }
                SeqCheck::Reject(code) => {
                    rejected = Some(code);
                    break;
                }
            }
            if rolls(&st, now_ms, settings.segment_ms) {
                // segment.ms: Kafka rolls a segment this old on the next append.
                seal_locked(&mut st, logs.clock.now());
                sealed = true;
                if logs.clog.is_some() {
                    let next = st.next_offset;
                    st.log_breaks.push_back(next);
                }
            }
            if st.active.is_none() {
                let hint = (st.last_sealed_bytes + st.last_sealed_bytes / 4 + (64 << 10))
                    .min(segment_bytes + (1 << 20));
                st.active = Some(SegmentBuilder::new(
                    st.next_offset,
                    logs.clock.wall_ms(),
                    hint,
                ));
                if !st.flush_queued {
                    st.flush_queued = true;
                    armed = true;
                }
            }
            let Some(active) = st.active.as_mut() else {
                return Err(KafkaError::UnknownTopicOrPartition);
            };
            let (b, l) = active.append(&records[range.clone()], h, epoch);
            let full = active.body_len() >= segment_bytes;
            added += range.len();
            first.get_or_insert(b);
            last = l;
            st.next_offset = l + 1;
            st.producers
                .record(h, b, l, now_ms, logs.settings.producer_id_expiration_ms());
            if full {
                seal_locked(&mut st, logs.clock.now());
                sealed = true;
            }
        }
        if acks == -1 && added > 0 && st.active.is_some() {
            // Someone waits for what is buffered: commit it as soon as allowed.
            super::group_commit::want(logs, p, &mut st);
        }
        let durable = (acks == -1 && first.is_some()).then(|| {
            let (tx, rx) = oneshot::channel();
            if last < st.high_watermark {
                // Only duplicates of durable batches: nothing to wait for.
                let _ = tx.send(Ok(()));
            } else {
                st.ack_waiters.push_back((last, tx));
            }
            rx
        });
        ProduceOutcome {
            base_offset: first.unwrap_or(-1),
            log_start: st.log_start,
            durable,
        }
    };
    logs.add_buffered(added);
    if armed {
        logs.dirty.borrow_mut().push(p.clone());
    }
    if sealed {
        super::upload::kick(logs, p);
    }
    match rejected {
        Some(code) => Err(code),
        None => Ok(outcome),
    }
}

/// Whether the active segment is `segment_ms` old at `now_ms` (Kafka rolls such
/// a segment on the next append).
fn rolls(st: &super::State, now_ms: i64, segment_ms: i64) -> bool {
    st.active
        .as_ref()
        .is_some_and(|a| !a.is_empty() && now_ms - a.created_ms() >= segment_ms)
}

/// Moves the active buffer to the upload queue; false if it held nothing.
pub(super) fn seal_locked(st: &mut super::State, now: Instant) -> bool {
    st.awaited = false;
    let Some(active) = st.active.take() else {
        return false;
    };
    if active.is_empty() {
        return false;
    }
    let sealed = active.finish(DEFAULT_INDEX_INTERVAL);
    st.last_sealed_bytes = sealed.segment.size();
    st.last_seal = Some(now);
    st.pending.push_back(sealed);
    true
}

/// Seals the active buffer now (flush timer, TriggerFlush, shutdown). With the
/// commit log, what it holds is written out to the store's objects too.
pub fn seal(logs: &Rc<Logs>, p: &Rc<Partition>) {
    let had = {
        let mut st = p.st.borrow_mut();
        if logs.clog.is_some() {
            st.write_out = true;
        }
        seal_locked(&mut st, logs.clock.now())
    };
    // With the commit log, logged segments may be waiting to be written out
    // (shutdown, TriggerFlush) even when the buffer held nothing new.
    if had || logs.clog.is_some() {
        super::upload::kick(logs, p);
    }
}

/// Seals every partition of the shard that holds unflushed data, at wall-clock
/// multiples of the flush interval. One clock for all partitions and shards: a
/// produce request spanning many partitions waits for one flush, not for the
/// latest of many independently phased timers, and no byte waits longer than
/// the interval. Wall clock and sleep are the logs' `Clock`.
pub async fn flush_ticker(logs: Rc<Logs>) {
    let interval = logs.settings.flush_interval.as_millis().max(1) as i64;
    loop {
        let now = logs.clock.wall_ms();
        let next = (now / interval + 1) * interval;
        logs.clock
            .sleep(Duration::from_millis((next - now) as u64))
            .await;
        if logs.is_shutting_down() {
            return;
        }
        let dirty = std::mem::take(&mut *logs.dirty.borrow_mut());
        let mut kept = Vec::new();
        for p in dirty {
            if p.st.borrow().awaited && !p.st.borrow().deleted {
                // Group commit owns it and seals it sooner than this tick would
                // help (it waits only for its own upload, an upload slot or the
                // minimum interval, which is below this interval); sealing it
                // here would only cut its next object in two.
                kept.push(p);
                continue;
            }
            p.st.borrow_mut().flush_queued = false;
            seal(&logs, &p);
        }
        logs.dirty.borrow_mut().extend(kept);
        super::commit_log::tick(&logs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::build_batch;

    #[test]
    fn validation_takes_all_batches_or_none() {
        let mut buf = build_batch(0, 1, &[b"a"]);
        buf.extend(build_batch(0, 1, &[b"b", b"c"]));
        assert_eq!(validate(&buf).unwrap().len(), 2);
        let n = buf.len();
        buf[n - 1] ^= 1;
        assert_eq!(validate(&buf).unwrap_err(), KafkaError::CorruptMessage);
        assert_eq!(validate(&[]).unwrap_err(), KafkaError::InvalidRecord);
        let mut old = build_batch(0, 1, &[b"a"]);
        old[16] = 1;
        assert_eq!(
            validate(&old).unwrap_err(),
            KafkaError::UnsupportedForMessageFormat
        );
    }
}
