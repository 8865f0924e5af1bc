//! OffsetForLeaderEpoch v2-v4. A Kafscale partition has one leader for its whole
//! life, so its only epoch is `LEADER_EPOCH` (0), which every stored batch
//! carries. Its end offset is the high watermark: the end of what consumers can
//! have read, so a client validating its position after a leader change never
//! sees a truncation that did not happen. Other epochs are unknown: the answer
//! is epoch -1, offset -1 (Kafka's UNDEFINED_EPOCH). A `current_leader_epoch`
//! newer than the broker's answers UNKNOWN_LEADER_EPOCH.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::errors::{NONE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH};
use crate::partition::{self, LEADER_EPOCH};
use crate::placement::partition_shard;
use crate::router::scatter;
use crate::shard::Shard;

/// (error, epoch, end offset) for one partition, given its high watermark.
fn answer(current_leader_epoch: i32, leader_epoch: i32, high_watermark: i64) -> (i16, i32, i64) {
    if current_leader_epoch > LEADER_EPOCH {
        return (UNKNOWN_LEADER_EPOCH, -1, -1);
    }
    if leader_epoch == LEADER_EPOCH {
        (NONE, LEADER_EPOCH, high_watermark)
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
                    Ok(p) => answer(current, epoch, p.offsets().high_watermark),
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
    fn only_epoch_zero_has_an_end_offset() {
        assert_eq!(answer(-1, 0, 42), (NONE, 0, 42));
        assert_eq!(answer(0, 0, 42), (NONE, 0, 42));
        assert_eq!(answer(0, 1, 42), (NONE, -1, -1));
        assert_eq!(answer(-1, -1, 42), (NONE, -1, -1));
        assert_eq!(answer(1, 0, 42), (UNKNOWN_LEADER_EPOCH, -1, -1));
    }
}
