//! DescribeLogDirs v1-v4: this broker's partitions as one "log dir", the object
//! store location they live in (`s3://bucket/namespace`, or the local directory
//! of the embedded default). A partition's size is its log: the bytes of its
//! durable `.kfs` objects plus what is buffered and not yet uploaded; the offset
//! lag is 0 (there are no future replicas). Only partitions this broker owns are
//! listed, as a Kafka broker lists only the replicas it hosts; a null topic list
//! means all of them. Kafka tools (kafka-log-dirs, kafka-ui, AKHQ) read the
//! cluster's storage from this. The store has no capacity to report, so v4's
//! total and usable bytes are -1 (unknown).

use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::per_partition::on_owners;
use crate::errors::NONE;
use crate::partition;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: DescribeLogDirsRequest,
    _version: i16,
) -> DescribeLogDirsResponse {
    let cluster = shard.cluster();
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        None => cluster.all_partitions(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    };
    // This broker's partitions among them: unknown ones and other brokers' are
    // not listed.
    let topics = wanted
        .into_iter()
        .filter_map(|(name, parts)| {
            let t = cluster.topic(&name)?;
            let mine: Vec<(i32, ())> = parts
                .into_iter()
                .filter(|i| (0..t.partitions).contains(i) && cluster.owns(t, *i))
                .map(|i| (i, ()))
                .collect();
            (!mine.is_empty()).then(|| (TopicName(StrBytes::from_string(name)), mine))
        })
        .collect();
    let answers = on_owners(
        shard,
        topics,
        || None,
        |sh, topic, index, ()| async move {
            let p = partition::partition(&sh.logs, &topic, index).await.ok()?;
            let s = p.status();
            Some(s.store_bytes as i64 + s.unflushed_bytes as i64)
        },
    )
    .await;
    let mut dir = DescribeLogDirsResult::default();
    dir.error_code = NONE;
    dir.log_dir = StrBytes::from_string(shard.settings.store.log_dir.clone());
    dir.total_bytes = -1;
    dir.usable_bytes = -1;
    for (name, parts) in answers {
        let mut t = DescribeLogDirsTopic::default();
        t.name = name;
        // A partition that could not be loaded (moved meanwhile, store down) is
        // left out rather than reported with a made-up size.
        t.partitions = parts
            .into_iter()
            .filter_map(|(index, size)| {
                let mut p = DescribeLogDirsPartition::default();
                p.partition_index = index;
                p.partition_size = size?;
                p.offset_lag = 0;
                Some(p)
            })
            .collect();
        if !t.partitions.is_empty() {
            dir.topics.push(t);
        }
    }
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![dir];
    resp
}
