//! DescribeTopicPartitions v0 (KIP-966): Metadata's topic and partition view,
//! paged. Topics are answered in name order (all of them when the request names
//! none), from the cursor's topic and partition on, with at most
//! `response_partition_limit` partitions (capped at 2000, Kafka's
//! `max.request.partition.size.limit`); when partitions are left, `next_cursor`
//! names the first of them. Each partition has its leader (the broker that owns
//! it) as its only replica and in-sync replica; there are no eligible-leader
//! replicas to report (ELR lists are empty) and nothing is offline.

use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_request::Cursor as RequestCursor;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION};
use crate::metadata::{Cluster, TopicMeta};
use crate::shard::Shard;

/// Kafka's `max.request.partition.size.limit` default.
const MAX_PARTITIONS: i32 = 2000;

/// Kafka's "authorized operations not computed" marker.
const OPERATIONS_UNKNOWN: i32 = i32::MIN;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn partition(cluster: &Cluster, t: &TopicMeta, i: i32) -> DescribeTopicPartitionsResponsePartition {
    let mut p = DescribeTopicPartitionsResponsePartition::default();
    p.partition_index = i;
    p.leader_epoch = cluster.leader_epoch(t, i);
    match cluster.leader(t, i) {
        Some(leader) => {
            p.leader_id = BrokerId(leader);
            p.replica_nodes = vec![BrokerId(leader)];
            p.isr_nodes = vec![BrokerId(leader)];
        }
        None => {
            p.error_code = LEADER_NOT_AVAILABLE;
            p.leader_id = BrokerId(-1);
        }
    }
    p.eligible_leader_replicas = Some(Vec::new());
    p.last_known_elr = Some(Vec::new());
    p
}

pub fn handle(
    shard: &Rc<Shard>,
    req: DescribeTopicPartitionsRequest,
    _version: i16,
) -> DescribeTopicPartitionsResponse {
    let cluster = shard.cluster();
    let mut names: Vec<String> = if req.topics.is_empty() {
        cluster.topics.keys().cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (from_topic, from_partition) = match &req.cursor {
        Some(RequestCursor {
            topic_name,
            partition_index,
            ..
        }) => (Some(topic_name.0.to_string()), (*partition_index).max(0)),
        None => (None, 0),
    };
    let mut budget = req.response_partition_limit.clamp(1, MAX_PARTITIONS);
    let mut resp = DescribeTopicPartitionsResponse::default();
    for n in names {
        if from_topic.as_ref().is_some_and(|c| n < *c) {
            continue;
        }
        let mut out = DescribeTopicPartitionsResponseTopic::default();
        out.name = Some(name(&n));
        out.topic_authorized_operations = OPERATIONS_UNKNOWN;
        let Some(t) = cluster.topic(&n) else {
            out.error_code = UNKNOWN_TOPIC_OR_PARTITION;
            resp.topics.push(out);
            continue;
        };
        out.topic_id = t.id;
        let first = if from_topic.as_deref() == Some(n.as_str()) {
            from_partition
        } else {
            0
        };
        if budget == 0 {
            let mut c = Cursor::default();
            c.topic_name = name(&n);
            c.partition_index = first;
            resp.next_cursor = Some(c);
            break;
        }
        let mut i = first;
        while i < t.partitions && budget > 0 {
            out.partitions.push(partition(&cluster, t, i));
            i += 1;
            budget -= 1;
        }
        resp.topics.push(out);
        if i < t.partitions {
            let mut c = Cursor::default();
            c.topic_name = name(&n);
            c.partition_index = i;
            resp.next_cursor = Some(c);
            break;
        }
    }
    resp
}
