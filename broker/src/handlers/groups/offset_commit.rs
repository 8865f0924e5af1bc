//! OffsetCommit v0-v9: validated against the group on its shard (member, generation,
//! fencing; for a consumer-protocol group the member and its epoch, v9's
//! `generation_id_or_member_epoch`, else STALE_MEMBER_EPOCH), written to the
//! metadata store, and answered only once durable. v0
//! carries no generation or member, so it is a commit from outside the group;
//! v1's per-partition commit timestamp, like v2-v4's retention time, is ignored
//! (offsets are kept until their topic is deleted).

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use tracing::warn;

use super::on_owner;
use crate::groups::error::GroupError;
use crate::groups::{instance_id, settle};
use crate::io::CallError;
use crate::metadata::{MetaError, OffsetMeta};
use crate::shard::Shard;

/// One partition's commit as it crosses to the group's shard.
struct Item {
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let instance = instance_id(&req.group_instance_id);
    let generation = req.generation_id_or_member_epoch;
    let mut shape: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut items = Vec::new();
    for t in req.topics {
        shape.push((
            t.name.clone(),
            t.partitions.iter().map(|p| p.partition_index).collect(),
        ));
        for p in t.partitions {
            items.push(Item {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.map(|m| m.to_string()),
            });
        }
    }
    let n = items.len();
    let results = on_owner(shard, &group.clone(), move |sh| async move {
        commit(
            &sh,
            &group,
            &member_id,
            instance.as_deref(),
            generation,
            items,
            version,
        )
        .await
    })
    .await
    .unwrap_or_else(|e| vec![Err(e); n]);
    let mut resp = OffsetCommitResponse::default();
    let mut it = results.into_iter();
    for (name, partitions) in shape {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = name;
        t.partitions = partitions
            .into_iter()
            .map(|index| {
                let mut p = OffsetCommitResponsePartition::default();
                p.partition_index = index;
                p.error_code = match it.next() {
                    Some(Ok(())) => 0,
                    Some(Err(e)) => e.code(),
                    None => GroupError::CoordinatorNotAvailable.code(),
                };
                p
            })
            .collect();
        resp.topics.push(t);
    }
    resp
}

/// Runs on the group's shard. One result per item, in order.
async fn commit(
    shard: &Rc<Shard>,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
    items: Vec<Item>,
    version: i16,
) -> Vec<Result<(), GroupError>> {
    let n = items.len();
    let slot = match shard.groups.get(group) {
        Some(s) => s,
        // A consumer that assigns partitions itself commits to a group nobody joined.
        None if generation < 0 && member_id.is_empty() && instance.is_none() => {
            shard.groups.get_or_create(group)
        }
        // A member of a group this coordinator does not know: from v9 (which
        // both protocols use) Kafka says so; before, ILLEGAL_GENERATION.
        None if version >= 9 => return vec![Err(GroupError::GroupIdNotFound); n],
        None => return vec![Err(GroupError::IllegalGeneration); n],
    };
    let _w = slot.write_lock.lock().await;
    let checked = match slot.consumer.borrow().as_ref() {
        Some(c) => c.validate_offsets(member_id, generation),
        None => slot.group.borrow_mut().validate_commit(
            member_id,
            instance,
            generation,
            shard.groups.now(),
        ),
    };
    settle(&shard.groups, &slot);
    if let Err(e) = checked {
        return vec![Err(e); n];
    }
    let cluster = shard.cluster();
    let now_ms = shard.clock().wall_ms();
    let max_meta = shard.settings.offset_metadata_max_bytes;
    let mut results = Vec::with_capacity(n);
    let mut accepted = Vec::new();
    for it in items {
        let known = cluster
            .topic(&it.topic)
            .is_some_and(|t| it.partition >= 0 && it.partition < t.partitions);
        if !known {
            results.push(Err(GroupError::UnknownTopicOrPartition));
        } else if it.metadata.as_ref().is_some_and(|m| m.len() > max_meta) {
            results.push(Err(GroupError::OffsetMetadataTooLarge));
        } else {
            results.push(Ok(()));
            accepted.push((
                it.topic,
                it.partition,
                OffsetMeta {
                    offset: it.offset,
                    leader_epoch: it.leader_epoch,
                    metadata: it.metadata,
                    commit_ms: now_ms,
                },
            ));
        }
    }
    if accepted.is_empty() {
        return results;
    }
    let claim = match shard.groups.claim_for(group) {
        Ok(c) => c,
        Err(e) => return results.into_iter().map(|r| r.and(Err(e.clone()))).collect(),
    };
    let store = shard.meta.clone();
    let (g, batch) = (group.to_string(), accepted.clone());
    let stored = shard
        .io
        .call(async move { store.commit_offsets(&g, batch, claim).await })
        .await;
    match stored {
        Ok(()) => {
            let mut offsets = slot.offsets.borrow_mut();
            for (t, p, o) in accepted {
                offsets.insert((t, p), o);
            }
            results
        }
        Err(e) => {
            warn!(group, error = %e, "storing committed offsets failed");
            // A deposed coordinator's commit is refused: the client finds the
            // new one and commits there.
            let code = match e {
                CallError::Failed(MetaError::Fenced { .. }) => GroupError::NotCoordinator,
                _ => GroupError::CoordinatorNotAvailable,
            };
            results
                .into_iter()
                .map(|r| r.and(Err(code.clone())))
                .collect()
        }
    }
}
