//! ConsumerGroupHeartbeat v0-v1 (KIP-848, `group.protocol=consumer`): joins,
//! heartbeats and leaves of the consumer protocol, all in one API. Checked as
//! Kafka checks it, forwarded to the group's shard, where
//! `groups/consumer.rs` runs the group; partitions cross the wire by topic id
//! and live in the state machine by topic name.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::on_owner;
use crate::groups::assignor;
use crate::groups::consumer::{ConsumerGroup, HeartbeatOk, HeartbeatParams};
use crate::groups::error::GroupError;
use crate::groups::settle;
use crate::metadata::Cluster;
use crate::shard::Shard;

/// Kafka's request checks (`throwIfConsumerGroupHeartbeatRequestIsInvalid`).
fn check(req: &ConsumerGroupHeartbeatRequest, version: i16) -> Result<(), GroupError> {
    let bad = |m: &str| Err(GroupError::InvalidRequest(m.to_string()));
    if req.group_id.is_empty() {
        return bad("GroupId can't be empty.");
    }
    if req.instance_id.as_ref().is_some_and(|i| i.is_empty()) {
        return bad("InstanceId can't be empty.");
    }
    if req.rack_id.as_ref().is_some_and(|r| r.is_empty()) {
        return bad("RackId can't be empty.");
    }
    if req.member_id.is_empty() && (version >= 1 || req.member_epoch != 0) {
        return bad("MemberId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return bad("RebalanceTimeoutMs must be provided in first request.");
            }
            if req.topic_partitions.is_none() {
                return bad("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return bad(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
        }
        -2 if req.instance_id.is_none() => return bad("InstanceId can't be null."),
        e if e < -2 => return bad("MemberEpoch is invalid."),
        _ => {}
    }
    Ok(())
}

/// Partitions by topic id to partitions by name; ids the cluster does not know
/// (a deleted topic) are left out: nobody can own those.
fn by_name(cluster: &Cluster, parts: Vec<(Uuid, Vec<i32>)>) -> assignor::Assignment {
    let mut out = assignor::Assignment::new();
    for (id, ps) in parts {
        if let Some(t) = cluster.by_id.get(&id) {
            out.entry(t.name.clone()).or_default().extend(ps);
        }
    }
    out
}

/// Partitions by name to partitions by topic id, for the response.
fn by_id(cluster: &Cluster, a: &assignor::Assignment) -> Vec<(Uuid, Vec<i32>)> {
    a.iter()
        .filter_map(|(t, ps)| {
            let meta = cluster.topic(t)?;
            Some((meta.id, ps.iter().copied().collect()))
        })
        .collect()
}

/// The answer as it crosses back from the group's shard (plain data).
struct Answer {
    ok: HeartbeatOk,
    assignment: Option<Vec<(Uuid, Vec<i32>)>>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    let result = match check(&req, version) {
        Err(e) => Err(e),
        Ok(()) => {
            let group = req.group_id.0.to_string();
            let owned = req.topic_partitions.map(|tps| {
                tps.into_iter()
                    .map(|tp| (tp.topic_id, tp.partitions))
                    .collect::<Vec<_>>()
            });
            let params = HeartbeatParams {
                member_id: req.member_id.to_string(),
                member_epoch: req.member_epoch,
                instance_id: req.instance_id.map(|s| s.to_string()),
                rack_id: req.rack_id.map(|s| s.to_string()),
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                topic_names: req
                    .subscribed_topic_names
                    .map(|ns| ns.into_iter().map(|n| n.0.to_string()).collect()),
                regex: req.subscribed_topic_regex.map(|s| s.to_string()),
                assignor: req.server_assignor.map(|s| s.to_string()),
                owned: None,
                client_id,
                client_host,
            };
            on_owner(shard, &group.clone(), move |sh| async move {
                let cluster = sh.cluster();
                let mut params = params;
                params.owned = owned.map(|o| by_name(&cluster, o));
                let slot = sh.groups.get_or_create(&group);
                if !slot.group.borrow().is_empty() {
                    // Kafka without an online upgrade: a classic group with
                    // members is not a consumer group.
                    return Err(GroupError::GroupIdNotFound);
                }
                let result = {
                    let mut c = slot.consumer.borrow_mut();
                    let cg = c.get_or_insert_with(|| ConsumerGroup::new(&group));
                    cg.heartbeat(
                        params,
                        sh.groups.now(),
                        &sh.groups.config().consumer,
                        &*cluster,
                    )
                };
                settle(&sh.groups, &slot);
                result.map(|ok| Answer {
                    assignment: ok.assignment.as_ref().map(|a| by_id(&cluster, a)),
                    ok,
                })
            })
            .await
            .and_then(|r| r)
        }
    };
    response(result)
}

fn response(result: Result<Answer, GroupError>) -> ConsumerGroupHeartbeatResponse {
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    match result {
        Ok(a) => {
            resp.member_id = Some(StrBytes::from_string(a.ok.member_id));
            resp.member_epoch = a.ok.member_epoch;
            resp.heartbeat_interval_ms = a.ok.heartbeat_interval_ms;
            resp.assignment = a.assignment.map(|parts| {
                let mut asg = Assignment::default();
                asg.topic_partitions = parts
                    .into_iter()
                    .map(|(id, ps)| {
                        let mut tp = TopicPartitions::default();
                        tp.topic_id = id;
                        tp.partitions = ps;
                        tp
                    })
                    .collect();
                asg
            });
        }
        Err(e) => {
            resp.error_code = e.code();
            resp.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    resp
}

/// Partitions by name with their topic ids (nil for a topic gone meanwhile),
/// for ConsumerGroupDescribe.
pub(crate) fn with_ids(
    cluster: &Cluster,
    a: &assignor::Assignment,
) -> Vec<(Uuid, String, Vec<i32>)> {
    a.iter()
        .map(|(t, ps)| {
            let id = cluster.topic(t).map(|m| m.id).unwrap_or_else(Uuid::nil);
            (id, t.clone(), ps.iter().copied().collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::GroupId;

    fn req(epoch: i32) -> ConsumerGroupHeartbeatRequest {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str("g"));
        r.member_id = StrBytes::from_static_str("m");
        r.member_epoch = epoch;
        r.rebalance_timeout_ms = 30_000;
        r.topic_partitions = Some(Vec::new());
        r.subscribed_topic_names = Some(Vec::new());
        r
    }

    #[test]
    fn requests_are_checked_as_kafka_checks_them() {
        assert_eq!(check(&req(0), 1), Ok(()));
        let mut r = req(0);
        r.member_id = StrBytes::default();
        assert!(check(&r, 1).is_err());
        assert_eq!(check(&r, 0), Ok(()), "v0: the coordinator picks the id");
        let mut r = req(0);
        r.rebalance_timeout_ms = -1;
        assert!(check(&r, 1).is_err());
        let mut r = req(0);
        r.topic_partitions = None;
        assert!(check(&r, 1).is_err());
        let mut r = req(0);
        r.subscribed_topic_names = None;
        assert!(check(&r, 1).is_err());
        assert!(check(&req(-2), 1).is_err(), "-2 needs an instance id");
        assert!(check(&req(-3), 1).is_err());
        let mut r = req(3);
        r.group_id = GroupId(StrBytes::default());
        assert_eq!(
            check(&r, 1).map_err(|e| e.code()),
            Err(kafscale_codec::KafkaError::InvalidRequest.code())
        );
    }
}
