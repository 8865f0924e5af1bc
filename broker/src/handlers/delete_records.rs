//! DeleteRecords v0-v2: moves each partition's log start to the given offset (-1:
//! the high watermark) on the partition's owner, durably and fenced by its claim
//! (`partition::delete_records`). A broker that does not own a partition answers
//! NOT_LEADER_OR_FOLLOWER (clients ask the leader from Metadata); an offset above
//! the high watermark is OFFSET_OUT_OF_RANGE. The answer's low watermark is the
//! log start afterwards.

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::per_partition::on_owners;
use crate::errors::{NONE, NOT_LEADER_OR_FOLLOWER};
use crate::partition;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.offset))
                .collect();
            (t.name, parts)
        })
        .collect();
    let answers = on_owners(
        shard,
        topics,
        || (NOT_LEADER_OR_FOLLOWER, -1),
        |sh, topic, index, offset| async move {
            let r = match partition::partition(&sh.logs, &topic, index).await {
                Ok(p) => partition::delete_records(&sh.logs, &p, offset).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(low) => (NONE, low),
                Err(e) => (e.code(), -1),
            }
        },
    )
    .await;
    let mut resp = DeleteRecordsResponse::default();
    for (name, parts) in answers {
        let mut t = DeleteRecordsTopicResult::default();
        t.name = name;
        for (index, (error, low)) in parts {
            let mut p = DeleteRecordsPartitionResult::default();
            p.partition_index = index;
            p.error_code = error;
            p.low_watermark = low;
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}
