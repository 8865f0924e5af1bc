//! The fetch path on the owning shard. Only durable data is served (below the
//! high watermark). Segments come from the shard's cache (which also holds the
//! newest uploaded segments) or from the object store, with the CRC verified
//! and the following segments read ahead.

use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use kafscale_codec::batch::empty_batch;
use kafscale_segstore::{Segment, StoreError};
use tracing::error;

use super::logs::{Logs, SegKey};
use super::{Offsets, Partition, SegRef};
use crate::errors::KafkaError;
use crate::io::CallError;
use crate::runtime::spawn_detached;

pub struct ReadOutcome {
    pub records: Option<Bytes>,
    pub offsets: Offsets,
}

/// Reads whole batches starting at the one holding `offset`, up to `max_bytes`
/// (at least one batch). Errors are Kafka codes.
///
/// Offsets below the high watermark with no data (lost with a quarantined
/// segment, or acknowledged but missing from the store, see recovery.rs) never
/// stall a consumer: it gets the next stored batch after them, or, when none
/// follows, an empty batch that spans them, and moves on.
pub async fn read(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    offset: i64,
    max_bytes: usize,
) -> Result<ReadOutcome, KafkaError> {
    // Taken with the segment list (no await in between): objects the cleaner
    // replaces meanwhile are deleted only after this read and its readahead.
    let pin = p.pin();
    let (offsets, candidates, following) = {
        let st = p.st.borrow();
        if st.deleted {
            return Err(st.gone);
        }
        let offsets = Offsets {
            log_start: st.log_start,
            high_watermark: st.high_watermark,
        };
        if offset < st.log_start || offset > st.high_watermark {
            return Err(KafkaError::OffsetOutOfRange);
        }
        if offset == st.high_watermark {
            return Ok(ReadOutcome {
                records: None,
                offsets,
            });
        }
        // Logged and not yet written out (KAFSCALE_LOCAL_COMMIT=log): served
        // from memory, where they are until they are in the store's files.
        let logged = st.pending.iter().take(st.logged);
        if let Some(s) = logged
            .filter(|s| s.segment.last_offset >= offset)
            .find(|s| {
                s.segment.base_offset <= offset || st.durable.last().is_none_or(|d| d.last < offset)
            })
        {
            if let Some(records) = s
                .segment
                .slice_from(offset.max(s.segment.base_offset), max_bytes.max(1))
            {
                return Ok(ReadOutcome {
                    records: Some(records),
                    offsets,
                });
            }
        }
        let i = st.durable.partition_point(|s| s.base <= offset);
        // The segment that should hold `offset`, then the one after it (where a
        // consumer in a gap continues).
        let from = i.saturating_sub(1);
        let candidates: Vec<SegRef> = st.durable.iter().skip(from).take(2).copied().collect();
        let n = logs.settings.readahead_segments;
        let following: Vec<SegKey> = st
            .durable
            .iter()
            .skip(i)
            .take(n)
            .map(|s| s.key(p))
            .collect();
        (offsets, candidates, following)
    };
    for seg in candidates {
        if seg.last < offset {
            continue;
        }
        let segment = match segment(logs, seg.key(p)).await {
            Ok(s) => s,
            // Retention removed the segment while it was being read: the offset is
            // now below the log start, which is what the client is told.
            Err(_) if p.st.borrow().log_start > seg.base => {
                return Err(KafkaError::OffsetOutOfRange)
            }
            Err(code) => return Err(code),
        };
        note_max_ts(p, &seg, &segment);
        for key in &following {
            readahead(logs, key.clone(), pin.clone());
        }
        if let Some(records) = segment.slice_from(offset.max(seg.base), max_bytes.max(1)) {
            return Ok(ReadOutcome {
                records: Some(records),
                offsets,
            });
        }
    }
    // No stored batch at or after `offset` below the high watermark: the rest
    // of the log up to it is a gap.
    let last = offsets.high_watermark - 1;
    Ok(ReadOutcome {
        records: Some(Bytes::from(empty_batch(offset, last, logs.clock.wall_ms()))),
        offsets,
    })
}

/// Registers for a wake-up when data at `offset` becomes readable; `None` if it
/// already is (or the partition is gone).
pub fn wait_for_data(p: &Partition, offset: i64) -> Option<oneshot::Receiver<()>> {
    let mut st = p.st.borrow_mut();
    if st.deleted || st.high_watermark > offset {
        return None;
    }
    // Waiters whose fetch already answered (deadline passed) are dropped here, so
    // an idle partition polled forever does not collect them.
    st.hw_waiters.retain(|w| !w.is_canceled());
    let (tx, rx) = oneshot::channel();
    st.hw_waiters.push(tx);
    Some(rx)
}

/// Records a recovered segment's max timestamp once it has been read anyway, so
/// that timestamp lookups and retention need not read it again.
pub(crate) fn note_max_ts(p: &Partition, seg: &SegRef, segment: &Segment) -> Option<i64> {
    let max = segment.batches.iter().map(|b| b.max_timestamp).max();
    let mut st = p.st.borrow_mut();
    let i = st.durable.partition_point(|s| s.base < seg.base);
    if let Some(s) = st.durable.get_mut(i) {
        if s.base == seg.base && s.gen == seg.gen && s.max_ts.is_none() {
            s.max_ts = max;
        }
    }
    max
}

/// A segment from the cache, or read from the store with concurrent readers
/// sharing one GET. The reader that started the GET may be cancelled (its fetch
/// answered or its connection closed): its registration is then removed and the
/// readers that waited on it start again, so no segment is left unreadable.
pub(crate) async fn segment(logs: &Rc<Logs>, key: SegKey) -> Result<Segment, KafkaError> {
    let mut first = true;
    loop {
        if let Some(s) = logs.cache.borrow_mut().get(&key) {
            if first {
                logs.metrics
                    .cache_hits
                    .set(logs.metrics.cache_hits.get() + 1);
            }
            return Ok(s);
        }
        if std::mem::replace(&mut first, false) {
            logs.metrics
                .cache_misses
                .set(logs.metrics.cache_misses.get() + 1);
        }
        let rx = {
            let mut inflight = logs.reads_in_flight.borrow_mut();
            if let Some(waiters) = inflight.get_mut(&key) {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Some(rx)
            } else {
                inflight.insert(key.clone(), Vec::new());
                None
            }
        };
        match rx {
            Some(rx) => match rx.await {
                Ok(r) => return r,
                // The reader that owned the GET was cancelled: try again.
                Err(_) => continue,
            },
            None => {
                let guard = ReadInFlight { logs, key: &key };
                let result = read_from_store(logs, &key).await;
                drop(guard);
                return result;
            }
        }
    }
}

/// A GET this reader started: its waiters are answered (or, if the reader is
/// dropped first, released to try again) when it goes away.
struct ReadInFlight<'a> {
    logs: &'a Rc<Logs>,
    key: &'a SegKey,
}

impl Drop for ReadInFlight<'_> {
    fn drop(&mut self) {
        // Dropping the senders wakes the waiters with `Canceled`; after a completed
        // read they have already been answered by `read_from_store`.
        self.logs.reads_in_flight.borrow_mut().remove(self.key);
    }
}

async fn read_from_store(logs: &Rc<Logs>, key: &SegKey) -> Result<Segment, KafkaError> {
    let store = logs.store.clone();
    let (topic, index, base, gen) = (key.0.to_string(), key.1, key.2, key.3);
    let res = logs
        .io
        .call(async move { store.read_object(&topic, index, base, gen).await })
        .await;
    let result = match res {
        Ok(seg) => {
            logs.cache.borrow_mut().insert(key.clone(), seg.clone());
            Ok(seg)
        }
        Err(CallError::Failed(StoreError::Corrupt {
            key: object,
            source,
        })) => {
            error!(object = %object, error = %source, "corrupt segment in the object store; not serving it");
            Err(KafkaError::CorruptMessage)
        }
        Err(CallError::Failed(e)) => {
            error!(topic = %key.0, partition = key.1, base_offset = key.2, error = %e, "segment read failed");
            Err(KafkaError::KafkaStorageError)
        }
        Err(CallError::Gone(e)) => {
            error!(error = %e, "segment read task lost");
            Err(KafkaError::KafkaStorageError)
        }
    };
    let waiters = logs
        .reads_in_flight
        .borrow_mut()
        .remove(key)
        .unwrap_or_default();
    for w in waiters {
        let _ = w.send(result.clone());
    }
    result
}

/// Starts loading a segment into the cache in the background (holding the
/// read's pin, so the object is not deleted under it).
fn readahead(logs: &Rc<Logs>, key: SegKey, pin: super::Pin) {
    if logs.cache.borrow_mut().contains(&key) || logs.reads_in_flight.borrow().contains_key(&key) {
        return;
    }
    let logs = logs.clone();
    spawn_detached(async move {
        let _ = segment(&logs, key).await;
        drop(pin);
    });
}
