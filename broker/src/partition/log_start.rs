//! DeleteRecords: moving a partition's log start forward on its owner. The new
//! start is published like a next offset: through `MetadataStore::commit_partition`,
//! which compares this broker's claim (fenced: a broker that lost the partition
//! cannot move it), and on the embedded store into its own file. Segments wholly
//! below the new start leave the log and their objects are deleted, except the
//! newest durable segment, whose footer recovery needs (retention's rule).

use std::rc::Rc;

use tracing::{info, warn};

use super::logs::Logs;
use super::Partition;
use crate::errors::KafkaError;
use crate::io::CallError;
use crate::metadata::MetaError;

/// DeleteRecords' "up to the high watermark".
pub const HIGH_WATERMARK: i64 = -1;

/// Moves the log start of `p` to `offset` (-1: the high watermark). Answers the
/// log start after the call (Kafka's low watermark). An offset above the high
/// watermark is OFFSET_OUT_OF_RANGE; one at or below the current start changes
/// nothing.
pub async fn delete_records(
    logs: &Rc<Logs>,
    p: &Rc<Partition>,
    offset: i64,
) -> Result<i64, KafkaError> {
    let target = {
        let st = p.st.borrow();
        if st.deleted {
            return Err(st.gone);
        }
        if st.releasing || !logs.meta.writable() {
            return Err(KafkaError::NotLeaderOrFollower);
        }
        let target = if offset == HIGH_WATERMARK {
            st.high_watermark
        } else {
            offset
        };
        if target < 0 || target > st.high_watermark {
            return Err(KafkaError::OffsetOutOfRange);
        }
        if target <= st.log_start {
            return Ok(st.log_start);
        }
        target
    };
    // Readers see the new start at once; every publish from here on carries it.
    // An upload commit already in flight read the old start, so ours goes after it.
    p.st.borrow_mut().log_start = target;
    p.uploads_idle().await;
    let (claim, next_offset) = {
        let st = p.st.borrow();
        if st.deleted {
            return Err(st.gone);
        }
        (st.claim.unwrap_or_default(), st.high_watermark)
    };
    let meta = logs.meta.clone();
    let (topic, id, index) = (p.topic.clone(), p.topic_id, p.index);
    let committed = logs
        .io
        .call(async move {
            meta.commit_partition(&topic, id, index, next_offset, target, claim)
                .await
        })
        .await;
    match committed {
        Ok(()) => {}
        Err(CallError::Failed(e @ MetaError::Fenced { .. })) => {
            warn!(topic = %p.topic, partition = p.index, error = %e, "DeleteRecords: partition lost to another broker");
            p.st.borrow_mut().claim = None;
            logs.drop_partition(p, KafkaError::NotLeaderOrFollower);
            return Err(KafkaError::NotLeaderOrFollower);
        }
        Err(e) => {
            // The start moved in memory only; the next publish of the partition
            // carries it (tracked stores), and the client may retry.
            warn!(topic = %p.topic, partition = p.index, log_start = target, error = %e, "DeleteRecords: log start not stored");
            return Err(KafkaError::KafkaStorageError);
        }
    }
    let dropped = {
        let mut st = p.st.borrow_mut();
        let mut dropped = Vec::new();
        while st.durable.len() > 1 && st.durable[0].last < target {
            let seg = st.durable.remove(0);
            st.doomed.push((seg.base, seg.gen));
            dropped.push(seg);
        }
        dropped
    };
    for seg in &dropped {
        logs.cache.borrow_mut().remove(&seg.key(p));
    }
    info!(topic = %p.topic, partition = p.index, log_start = target, segments_deleted = dropped.len(), "DeleteRecords: log start moved");
    // Objects that cannot be deleted now are retried by the next retention pass
    // of a topic with retention, or the next DeleteRecords.
    super::retention::delete_doomed(logs, p).await;
    Ok(target)
}
