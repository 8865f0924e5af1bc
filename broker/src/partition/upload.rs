//! Uploading sealed segments. Each partition uploads its segments one at a time
//! and in order (so the durable log never has a hole), partitions upload in
//! parallel up to the shard's upload slots, and a failed PUT is retried with
//! back-off until it succeeds or the topic is deleted. Only after a PUT succeeds
//! does the high watermark move, `acks=-1` producers get their answer and
//! long-polling consumers wake.
//!
//! With a store that tracks partition state (etcd), the partition's next offset
//! is committed there between the PUT and the high-watermark move: one put per
//! segment, retried with the same back-off while etcd is away. Producers waiting
//! meanwhile get their request timeout (retriable); nothing is acknowledged that
//! recovery could lose, and recovery never hands out an offset twice.

use std::rc::Rc;
use std::time::Duration;

use tracing::{debug, warn};

use kafscale_segstore::{SealedSegment, Segment, StoreError, DEFAULT_INDEX_INTERVAL};

use super::logs::Logs;
use super::{body_bytes, Partition, SegRef};
use crate::errors::KafkaError;
use crate::io::CallError;
use crate::metadata::MetaError;
use crate::runtime::{sleep, spawn_detached, Backoff};

/// Back-off between attempts of a failed PUT or next-offset commit. In real
/// time, not the logs' clock: it paces calls to a store that recovers in real
/// time, and no Kafka timeout or timer depends on it (a producer waiting for the
/// upload has its own deadline on the clock).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// What one PUT writes: a sealed segment, or logged segments to write out as
/// one (coalesced on the I/O runtime, not on the shard: it copies every byte).
#[derive(Clone)]
pub(super) enum Object {
    One(SealedSegment),
    Parts(Vec<Segment>),
}

impl Object {
    pub(super) fn base_offset(&self) -> i64 {
        match self {
            Object::One(s) => s.segment.base_offset,
            Object::Parts(p) => p.first().map_or(-1, |s| s.base_offset),
        }
    }

    pub(super) fn seal(self) -> Result<SealedSegment, StoreError> {
        match self {
            Object::One(s) => Ok(s),
            Object::Parts(parts) => {
                let refs: Vec<&Segment> = parts.iter().collect();
                kafscale_segstore::coalesce(&refs, DEFAULT_INDEX_INTERVAL).ok_or_else(|| {
                    StoreError::Corrupt {
                        key: format!(
                            "logged segments from {}",
                            parts.first().map_or(-1, |s| s.base_offset)
                        ),
                        source: kafscale_segstore::FormatError::Inconsistent(
                            "logged segments do not coalesce".into(),
                        ),
                    }
                })
            }
        }
    }
}

/// Commits `next_offset` of the partition to the metadata store, retrying until
/// it is stored; false if the topic was deleted meanwhile or this broker lost the
/// partition (then it is dropped here and its waiting producers are told
/// NOT_LEADER_OR_FOLLOWER: nothing in the upload is acknowledged).
async fn commit_next_offset(logs: &Rc<Logs>, p: &Rc<Partition>, next_offset: i64) -> bool {
    let mut backoff = BACKOFF;
    let mut attempt = 0u32;
    loop {
        if p.st.borrow().deleted {
            return false;
        }
        attempt += 1;
        let meta = logs.meta.clone();
        let (topic, id, index) = (p.topic.clone(), p.topic_id, p.index);
        let (claim, log_start) = {
            let st = p.st.borrow();
            (st.claim.unwrap_or_default(), st.log_start)
        };
        let res = logs
            .io
            .call(async move {
                meta.commit_partition(&topic, id, index, next_offset, log_start, claim)
                    .await
            })
            .await;
        match res {
            Ok(()) => return true,
            Err(CallError::Failed(e @ MetaError::Fenced { .. })) => {
                warn!(topic = %p.topic, partition = p.index, next_offset, error = %e, "partition lost to another broker; nothing of this upload is acknowledged");
                p.st.borrow_mut().claim = None;
                logs.drop_partition(p, KafkaError::NotLeaderOrFollower);
                return false;
            }
            Err(CallError::Failed(e)) => {
                warn!(topic = %p.topic, partition = p.index, next_offset, attempt, error = %e, "committing the next offset failed; retrying")
            }
            Err(CallError::Gone(e)) => {
                warn!(topic = %p.topic, partition = p.index, attempt, error = %e, "next-offset commit task lost; retrying")
            }
        }
        sleep(backoff.next()).await;
    }
}

/// Starts the partition's upload loop unless it is already running.
pub fn kick(logs: &Rc<Logs>, p: &Rc<Partition>) {
    if logs.clog.is_some() {
        super::commit_log::kick(logs, p);
        return;
    }
    {
        let mut st = p.st.borrow_mut();
        if st.uploading || st.pending.is_empty() || st.deleted {
            return;
        }
        st.uploading = true;
    }
    logs.upload_running(true);
    spawn_detached(upload_loop(logs.clone(), p.clone()));
}

pub(super) async fn upload_loop(logs: Rc<Logs>, p: Rc<Partition>) {
    loop {
        let next = if logs.clog.is_some() {
            super::commit_log::next_object(&logs, &p)
        } else {
            let st = p.st.borrow();
            if st.deleted {
                None
            } else {
                st.pending.front().cloned().map(|s| (Object::One(s), 1))
            }
        };
        let Some((object, covers)) = next else { break };
        let base_offset = object.base_offset();
        let slot = logs.upload_slot().await;
        let mut backoff = BACKOFF;
        let mut attempt = 0u32;
        let uploaded = loop {
            if p.st.borrow().deleted {
                break None;
            }
            attempt += 1;
            let res = match &logs.local_uring {
                Some(w) => match object.clone().seal() {
                    Ok(s) => w
                        .put_segment(&p.topic, p.index, &s)
                        .await
                        .map(|()| s)
                        .map_err(CallError::Failed),
                    Err(e) => Err(CallError::Failed(e)),
                },
                None => {
                    let store = logs.store.clone();
                    let topic = p.topic.clone();
                    let index = p.index;
                    let object = object.clone();
                    logs.io
                        .call(async move {
                            let s = object.seal()?;
                            store.put_segment(&topic, index, &s).await.map(|()| s)
                        })
                        .await
                }
            };
            match res {
                Ok(s) => break Some(s),
                Err(CallError::Failed(e @ StoreError::Conflict { .. })) => {
                    // Another owner's segment holds this base offset (a late
                    // upload of a previous owner): it is part of the log now.
                    // Nothing here is acknowledged; the partition reloads after
                    // it (keeping this broker's claim, which the next load
                    // finds) and the producers retry.
                    warn!(topic = %p.topic, partition = p.index, base_offset, error = %e, "a segment at this offset exists already; reloading the partition");
                    logs.drop_partition(&p, KafkaError::NotLeaderOrFollower);
                    break None;
                }
                Err(CallError::Failed(e)) => {
                    warn!(topic = %p.topic, partition = p.index, base_offset, attempt, error = %e, "segment upload failed; retrying")
                }
                Err(CallError::Gone(e)) => {
                    warn!(topic = %p.topic, partition = p.index, attempt, error = %e, "segment upload task lost; retrying")
                }
            }
            sleep(backoff.next()).await;
        };
        drop(slot);
        let Some(sealed) = uploaded else {
            break;
        };
        if logs.meta.tracks_partition_state()
            && !commit_next_offset(&logs, &p, sealed.segment.last_offset + 1).await
        {
            break;
        }
        debug!(topic = %p.topic, partition = p.index, base_offset = sealed.segment.base_offset, last_offset = sealed.segment.last_offset, bytes = sealed.segment.size(), "segment durable");
        let seg = sealed.segment;
        if logs.clog.is_some() {
            // Durable (and acknowledged) since the log append: it only moves
            // from the log to the store's files.
            super::commit_log::took_out(&logs, &p, covers);
        }
        let (acked, woken) = {
            let mut st = p.st.borrow_mut();
            if logs.clog.is_none() {
                st.pending.pop_front();
            }
            st.high_watermark = st.high_watermark.max(seg.last_offset + 1);
            st.durable.push(SegRef {
                base: seg.base_offset,
                last: seg.last_offset,
                bytes: seg.size() as u64,
                max_ts: seg.batches.iter().map(|b| b.max_timestamp).max(),
                gen: 0,
            });
            let hw = st.high_watermark;
            let mut acked = Vec::new();
            while st.ack_waiters.front().is_some_and(|(last, _)| *last < hw) {
                if let Some((_, w)) = st.ack_waiters.pop_front() {
                    acked.push(w);
                }
            }
            (acked, std::mem::take(&mut st.hw_waiters))
        };
        logs.release_buffered(body_bytes(&seg));
        // Tailing consumers read the newest segments; keep them in the cache.
        logs.cache
            .borrow_mut()
            .insert((p.topic.clone(), p.index, seg.base_offset, 0), seg);
        for w in acked {
            let _ = w.send(Ok(()));
        }
        for w in woken {
            let _ = w.send(());
        }
    }
    let idle = {
        let mut st = p.st.borrow_mut();
        st.uploading = false;
        std::mem::take(&mut st.idle_waiters)
    };
    logs.upload_running(false);
    for w in idle {
        let _ = w.send(());
    }
    // A segment sealed while the last PUT finished may be waiting.
    if !p.st.borrow().pending.is_empty() {
        kick(&logs, &p);
    }
    // What arrived during this upload (group commit), or another partition
    // waiting for an upload slot, may go now.
    super::group_commit::wake(&logs);
}
