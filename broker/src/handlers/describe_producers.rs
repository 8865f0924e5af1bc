//! DescribeProducers v0: the idempotent producers each partition's owner knows
//! (those whose batches it appended, or found in the log's tail when it loaded
//! the partition), with epoch, last sequence and when their last batch was
//! appended. There are no transactions, so the coordinator epoch is -1 and no
//! transaction is open. A broker that does not own a partition answers
//! NOT_LEADER_OR_FOLLOWER.

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::per_partition::on_owners;
use crate::errors::{NONE, NOT_LEADER_OR_FOLLOWER};
use crate::partition;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            (
                t.name,
                t.partition_indexes.into_iter().map(|i| (i, ())).collect(),
            )
        })
        .collect();
    let answers = on_owners(
        shard,
        topics,
        || (NOT_LEADER_OR_FOLLOWER, Vec::new()),
        |sh, topic, index, ()| async move {
            match partition::partition(&sh.logs, &topic, index).await {
                Ok(p) => (NONE, p.producers()),
                Err(e) => (e.code(), Vec::new()),
            }
        },
    )
    .await;
    let mut resp = DescribeProducersResponse::default();
    for (name, parts) in answers {
        let mut t = TopicResponse::default();
        t.name = name;
        for (index, (error, producers)) in parts {
            let mut p = PartitionResponse::default();
            p.partition_index = index;
            p.error_code = error;
            p.error_message = None;
            p.active_producers = producers
                .into_iter()
                .map(|(id, epoch, last_seq, last_ms)| {
                    let mut s = ProducerState::default();
                    s.producer_id = ProducerId(id);
                    s.producer_epoch = epoch as i32;
                    s.last_sequence = last_seq;
                    s.last_timestamp = last_ms;
                    s.coordinator_epoch = -1;
                    s.current_txn_start_offset = -1;
                    s
                })
                .collect();
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}
