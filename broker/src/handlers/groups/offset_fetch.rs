//! OffsetFetch v0-v9 (v8: several groups in one request; v9: a member of a
//! consumer-protocol group sends its member id and epoch, checked like a commit's; v0 is v1's format, which
//! Kafka 3.x answered from ZooKeeper and this broker from the same store). A partition without a
//! commit answers offset -1; a null topic list means every committed partition.
//!
//! The committed leader epoch is always answered as -1: a Kafscale partition
//! keeps one leader epoch for life, so validating a committed offset against it
//! (an OffsetForLeaderEpoch round trip per partition) could never find a
//! truncation; -1 tells clients to skip it.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::on_owner;
use crate::groups::error::GroupError;
use crate::shard::Shard;

/// A partition's answer: index and committed (offset, metadata), if any.
type PartitionOffset = (i32, Option<(i64, String)>);
type TopicOffsets = Vec<(String, Vec<PartitionOffset>)>;

pub async fn handle(
    shard: &Rc<Shard>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        let lookups = req.groups.into_iter().map(|g| {
            let name = g.group_id.0.to_string();
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let member = (version >= 9)
                .then(|| {
                    (
                        g.member_id.map(|m| m.to_string()).unwrap_or_default(),
                        g.member_epoch,
                    )
                })
                .filter(|(m, e)| !m.is_empty() || *e >= 0);
            async move { (g.group_id, fetch(shard, name, topics, member).await) }
        });
        for (group_id, result) in futures::future::join_all(lookups).await {
            let mut g = OffsetFetchResponseGroup::default();
            g.group_id = group_id;
            match result {
                Ok(topics) => {
                    g.topics = topics
                        .into_iter()
                        .map(|(name, parts)| {
                            let mut t = OffsetFetchResponseTopics::default();
                            t.name = TopicName(StrBytes::from_string(name));
                            t.partitions = parts
                                .into_iter()
                                .map(|(index, c)| {
                                    let mut p = OffsetFetchResponsePartitions::default();
                                    p.partition_index = index;
                                    p.committed_leader_epoch = -1;
                                    let (offset, meta) = c.unwrap_or((-1, String::new()));
                                    p.committed_offset = offset;
                                    p.metadata = Some(StrBytes::from_string(meta));
                                    p
                                })
                                .collect();
                            t
                        })
                        .collect()
                }
                Err(e) => g.error_code = e.code(),
            }
            resp.groups.push(g);
        }
        return resp;
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match fetch(shard, req.group_id.0.to_string(), topics, None).await {
        Ok(topics) => {
            resp.topics = topics
                .into_iter()
                .map(|(name, parts)| {
                    let mut t = OffsetFetchResponseTopic::default();
                    t.name = TopicName(StrBytes::from_string(name));
                    t.partitions = parts
                        .into_iter()
                        .map(|(index, c)| {
                            let mut p = OffsetFetchResponsePartition::default();
                            p.partition_index = index;
                            p.committed_leader_epoch = -1;
                            let (offset, meta) = c.unwrap_or((-1, String::new()));
                            p.committed_offset = offset;
                            p.metadata = Some(StrBytes::from_string(meta));
                            p
                        })
                        .collect();
                    t
                })
                .collect();
        }
        // The group-level error field exists from v2; v1 reports it per partition.
        Err(e) if version >= 2 => resp.error_code = e.code(),
        Err(_) => {}
    }
    resp
}

/// Looks the offsets up on the group's shard. `member`: the member id and
/// epoch a v9 request carried, checked against a consumer-protocol group.
async fn fetch(
    shard: &Rc<Shard>,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
) -> Result<TopicOffsets, GroupError> {
    on_owner(shard, &group.clone(), move |sh| async move {
        let Some(slot) = sh.groups.get(&group) else {
            return Ok(topics
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                .collect());
        };
        if let (Some((id, epoch)), Some(c)) = (&member, slot.consumer.borrow().as_ref()) {
            c.validate_offsets(id, *epoch)?;
        }
        let offsets = slot.offsets.borrow();
        let get = |t: &str, p: i32| {
            offsets
                .get(&(t.to_string(), p))
                .map(|o| (o.offset, o.metadata.clone().unwrap_or_default()))
        };
        Ok(match topics {
            Some(ts) => ts
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps.into_iter().map(|p| (p, get(&t, p))).collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut all: std::collections::BTreeMap<String, Vec<PartitionOffset>> =
                    Default::default();
                for ((t, p), o) in offsets.iter() {
                    all.entry(t.clone())
                        .or_default()
                        .push((*p, Some((o.offset, o.metadata.clone().unwrap_or_default()))));
                }
                all.into_iter()
                    .map(|(t, mut ps)| {
                        ps.sort_by_key(|(p, _)| *p);
                        (t, ps)
                    })
                    .collect()
            }
        })
    })
    .await
    .and_then(|r| r)
}
