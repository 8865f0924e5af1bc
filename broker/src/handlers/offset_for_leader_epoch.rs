//! OffsetForLeaderEpoch v0-v4 (v0-v1 carry no current epoch, so no fencing). A partition's epoch grows with every claim
//! (docs/cluster.md; always 0 for a broker alone), and stored batches carry the
//! epoch they were written at. The log is shared storage and never truncated, so
//! the end offset of every epoch up to the current one is the high watermark: a
//! client validating its position after a leader change never sees a truncation
//! that did not happen. Later epochs are unknown (epoch -1, offset -1, Kafka's
//! UNDEFINED_EPOCH). The client's `current_leader_epoch` is checked as Kafka does:
//! older → FENCED_LEADER_EPOCH, newer → UNKNOWN_LEADER_EPOCH.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::errors::{FENCED_LEADER_EPOCH, NONE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH};
use crate::partition;
use crate::placement::partition_shard;
use crate::router::scatter;
use crate::shard::Shard;

/// (error, epoch, end offset) for one partition held at `epoch`, given the
/// client's current epoch, the epoch it asks about and the high watermark.
///
/// The log is shared storage and is never truncated, so every epoch up to the
/// current one ends, as far as a client's position is concerned, at the high
/// watermark: a consumer validating its position never finds a truncation.
/// Epochs after the current one are unknown (UNDEFINED: -1, -1).
fn answer(epoch: i32, current: i32, asked: i32, high_watermark: i64) -> (i16, i32, i64) {
    if current >= 0 && current < epoch {
        return (FENCED_LEADER_EPOCH, -1, -1);
    }
    if current > epoch {
        return (UNKNOWN_LEADER_EPOCH, -1, -1);
    }
    if (0..=epoch).contains(&asked) {
        (NONE, asked, high_watermark)
    } else {
        (NONE, -1, -1)
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let mut items = Vec::new();
    let mut shape = Vec::new();
    for t in req.topics {
        let topic: Arc<str> = Arc::from(t.topic.0.as_str());
        shape.push((
            t.topic,
            t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
        ));
        for p in t.partitions {
            items.push((
                topic.clone(),
                p.partition,
                p.current_leader_epoch,
                p.leader_epoch,
            ));
        }
    }
    let count = shard.count;
    let results = scatter(
        shard,
        items,
        |(t, p, _, _)| partition_shard(t, *p, count),
        || (NOT_LEADER_OR_FOLLOWER, -1, -1),
        |sh, items| async move {
            let mut out = Vec::with_capacity(items.len());
            for (topic, index, current, epoch) in items {
                out.push(match partition::partition(&sh.logs, &topic, index).await {
                    Err(e) => (e.code(), -1, -1),
                    Ok(p) => answer(p.epoch(), current, epoch, p.offsets().high_watermark),
                });
            }
            out
        },
    )
    .await;
    let mut resp = OffsetForLeaderEpochResponse::default();
    let mut it = results.into_iter();
    for (name, indexes) in shape {
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = name;
        for index in indexes {
            let (error, epoch, end) = it.next().unwrap_or((NOT_LEADER_OR_FOLLOWER, -1, -1));
            let mut p = EpochEndOffset::default();
            p.partition = index;
            p.error_code = error;
            p.leader_epoch = epoch;
            p.end_offset = end;
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_up_to_the_current_end_at_the_high_watermark() {
        // A broker alone: epoch 0.
        assert_eq!(answer(0, -1, 0, 42), (NONE, 0, 42));
        assert_eq!(answer(0, 0, 0, 42), (NONE, 0, 42));
        assert_eq!(answer(0, 0, 1, 42), (NONE, -1, -1));
        assert_eq!(answer(0, -1, -1, 42), (NONE, -1, -1));
        assert_eq!(answer(0, 1, 0, 42), (UNKNOWN_LEADER_EPOCH, -1, -1));
        // Held at epoch 3 after failovers: older epochs end at the high watermark.
        assert_eq!(answer(3, 3, 1, 42), (NONE, 1, 42));
        assert_eq!(answer(3, 2, 1, 42), (FENCED_LEADER_EPOCH, -1, -1));
        assert_eq!(answer(3, 4, 3, 42), (UNKNOWN_LEADER_EPOCH, -1, -1));
    }
}
