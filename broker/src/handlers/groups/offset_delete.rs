//! OffsetDelete v0: removes a group's committed offsets of some partitions
//! (`kafka-consumer-groups --delete-offsets`). As in Kafka: an unknown group is
//! GROUP_ID_NOT_FOUND; a group with members of another protocol type than
//! `consumer` is NON_EMPTY_GROUP; in a consumer group with members, partitions
//! of topics a member subscribes to are GROUP_SUBSCRIBED_TO_TOPIC and stay
//! (a subscription that does not parse counts as subscribing to everything);
//! unknown topics or partitions are UNKNOWN_TOPIC_OR_PARTITION. The rest is
//! deleted from the store, behind the group's write lock, and then from memory.

use std::collections::HashSet;
use std::rc::Rc;

use bytes::Buf;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use tracing::warn;

use super::on_owner;
use crate::errors::{KafkaError, NONE, UNKNOWN_TOPIC_OR_PARTITION};
use crate::groups::coordinator::Group;
use crate::groups::error::GroupError;
use crate::shard::Shard;

/// The topics of a consumer-protocol subscription (ConsumerProtocolSubscription:
/// version i16, then an array of topic names); None if it does not parse.
fn subscribed_topics(mut b: &[u8]) -> Option<Vec<String>> {
    if b.remaining() < 6 {
        return None;
    }
    let _version = b.get_i16();
    let n = b.get_i32();
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        if b.remaining() < 2 {
            return None;
        }
        let len = usize::try_from(b.get_i16()).ok()?;
        let name = b.get(..len)?;
        out.push(String::from_utf8(name.to_vec()).ok()?);
        b.advance(len);
    }
    Some(out)
}

/// What a group with members subscribes to: None means "everything" (a member
/// whose subscription does not parse).
fn subscriptions(g: &Group) -> Option<HashSet<String>> {
    let mut all = HashSet::new();
    for m in g.members.values() {
        let meta = match &g.protocol {
            Some(p) => m.metadata_for(p),
            None => m
                .protocols
                .first()
                .map(|(_, b)| b.clone())
                .unwrap_or_default(),
        };
        all.extend(subscribed_topics(&meta)?);
    }
    Some(all)
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    let cluster = shard.cluster();
    // (topic, partition, known) in request order.
    let asked: Vec<(String, i32, bool)> = req
        .topics
        .iter()
        .flat_map(|t| {
            let meta = cluster.topic(&t.name.0);
            t.partitions.iter().map(move |p| {
                let known = meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index));
                (t.name.0.to_string(), p.partition_index, known)
            })
        })
        .collect();
    let n = asked.len();
    let result = on_owner(shard, &group.clone(), move |sh| async move {
        let Some(slot) = sh.groups.get(&group).filter(|s| s.exists()) else {
            return Err(GroupError::GroupIdNotFound);
        };
        let _w = slot.write_lock.lock().await;
        let subscribed = {
            let g = slot.group.borrow();
            let c = slot.consumer.borrow();
            if let Some(c) = c.as_ref() {
                Some(c.subscribed_topics().into_iter().collect())
            } else if g.is_empty() {
                Some(HashSet::new())
            } else if g.protocol_type.as_deref() != Some("consumer") {
                return Err(GroupError::NonEmptyGroup);
            } else {
                subscriptions(&g)
            }
        };
        let codes: Vec<i16> = asked
            .iter()
            .map(|(t, _, known)| {
                if !known {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else if subscribed.as_ref().is_none_or(|s| s.contains(t)) {
                    KafkaError::GroupSubscribedToTopic.code()
                } else {
                    NONE
                }
            })
            .collect();
        let doomed: Vec<(String, i32)> = asked
            .iter()
            .zip(&codes)
            .filter(|(_, c)| **c == NONE)
            .map(|((t, p, _), _)| (t.clone(), *p))
            .filter(|k| slot.offsets.borrow().contains_key(k))
            .collect();
        if !doomed.is_empty() {
            let claim = sh.groups.claim_for(&group)?;
            let store = sh.meta.clone();
            let (id, keys) = (group.clone(), doomed.clone());
            if let Err(e) = sh
                .io
                .call(async move { store.delete_offsets(&id, keys, claim).await })
                .await
            {
                warn!(group = %group, error = %e, "deleting offsets failed");
                return Err(GroupError::Storage);
            }
            let mut offsets = slot.offsets.borrow_mut();
            for k in &doomed {
                offsets.remove(k);
            }
        }
        Ok(codes)
    })
    .await
    .and_then(|r| r);
    let mut resp = OffsetDeleteResponse::default();
    let codes = match result {
        Ok(codes) => codes,
        Err(e) => {
            resp.error_code = e.code();
            vec![NONE; n]
        }
    };
    let mut it = codes.into_iter();
    for t in req.topics {
        let mut out = OffsetDeleteResponseTopic::default();
        out.name = t.name;
        for p in t.partitions {
            let mut r = OffsetDeleteResponsePartition::default();
            r.partition_index = p.partition_index;
            r.error_code = it.next().unwrap_or(NONE);
            out.partitions.push(r);
        }
        resp.topics.push(out);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_or_say_they_do_not() {
        let mut b = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["orders", "pay"] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&[0, 0, 0, 0]); // user data, ignored
        assert_eq!(
            subscribed_topics(&b),
            Some(vec!["orders".into(), "pay".into()])
        );
        assert_eq!(subscribed_topics(&b[..9]), None);
        assert_eq!(subscribed_topics(b"x"), None);
        assert_eq!(subscribed_topics(&[0, 0, 0, 0, 0, 1, 0xff, 0xff]), None);
    }
}
