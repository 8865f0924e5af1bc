//! ListOffsets: earliest (-2) is the log start, latest (-1) the high watermark
//! (also the last stable offset: there are no transactions), a timestamp >= 0 the
//! first offset whose record timestamp is at or after it (offset -1 when there
//! is none), -3 (v7) the offset of the record with the largest timestamp, and
//! -4 (v8, KIP-405's earliest local offset) the log start: every segment is
//! as "local" as any other here, as in Kafka without tiered storage.
//! Other negative timestamps answer INVALID_REQUEST. v0 (Kafka 3.x clients)
//! answers the same single offset as a one-element list, or an empty list when
//! there is none or the client asked for `max_num_offsets` 0.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::errors::{INVALID_REQUEST, NONE, NOT_LEADER_OR_FOLLOWER};
use crate::partition::{self, TimeLookup};
use crate::placement::partition_shard;
use crate::router::scatter;
use crate::shard::Shard;

pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut items = Vec::new();
    let mut shape = Vec::new();
    for t in req.topics {
        let topic: Arc<str> = Arc::from(t.name.0.as_str());
        shape.push((
            t.name,
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.max_num_offsets))
                .collect::<Vec<_>>(),
        ));
        for p in t.partitions {
            items.push((
                topic.clone(),
                p.partition_index,
                p.timestamp,
                p.current_leader_epoch,
            ));
        }
    }
    let count = shard.count;
    let results = scatter(
        shard,
        items,
        |(t, p, _, _)| partition_shard(t, *p, count),
        || (NOT_LEADER_OR_FOLLOWER, -1, -1, -1),
        move |sh, items| async move {
            let mut out = Vec::with_capacity(items.len());
            for (topic, index, ts, current) in items {
                let r = match partition::partition(&sh.logs, &topic, index)
                    .await
                    .and_then(|p| p.check_epoch(current).map(|()| p))
                {
                    Err(e) => (e.code(), -1, -1, -1),
                    Ok(p) => {
                        let epoch = p.epoch();
                        let o = p.offsets();
                        let lookup = match ts {
                            EARLIEST => Err((NONE, o.log_start, -1)),
                            EARLIEST_LOCAL if version >= 8 => Err((NONE, o.log_start, -1)),
                            LATEST => Err((NONE, o.high_watermark, -1)),
                            MAX_TIMESTAMP if version >= 7 => Ok(TimeLookup::MaxTimestamp),
                            t if t >= 0 => Ok(TimeLookup::AtOrAfter(t)),
                            _ => Err((INVALID_REQUEST, -1, -1)),
                        };
                        let (e, o, t) = match lookup {
                            Err(answer) => answer,
                            Ok(q) => match partition::offset_for_time(&sh.logs, &p, q).await {
                                Ok(Some((offset, timestamp))) => (NONE, offset, timestamp),
                                Ok(None) => (NONE, -1, -1),
                                Err(e) => (e.code(), -1, -1),
                            },
                        };
                        (e, o, t, epoch)
                    }
                };
                out.push(r);
            }
            out
        },
    )
    .await;
    let mut resp = ListOffsetsResponse::default();
    let mut it = results.into_iter();
    for (name, indexes) in shape {
        let mut t = ListOffsetsTopicResponse::default();
        t.name = name;
        for (index, max_num_offsets) in indexes {
            let (error, offset, timestamp, epoch) =
                it.next().unwrap_or((NOT_LEADER_OR_FOLLOWER, -1, -1, -1));
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = index;
            p.error_code = error;
            p.offset = offset;
            p.timestamp = timestamp;
            if version == 0 && error == NONE && offset >= 0 && max_num_offsets > 0 {
                // v0 answers a list; every lookup here has at most one offset.
                p.old_style_offsets = vec![offset];
            }
            // The field exists from v4; the encoder refuses it set on older versions.
            p.leader_epoch = if error == NONE && offset >= 0 && version >= 4 {
                epoch
            } else {
                -1
            };
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}
