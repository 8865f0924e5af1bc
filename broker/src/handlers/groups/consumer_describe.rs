//! ConsumerGroupDescribe v0-v1 (KIP-848): a consumer-protocol group's state,
//! epochs, assignor and members, each with its subscription, current assignment
//! and target assignment. A group that does not exist, or a classic group, is
//! GROUP_ID_NOT_FOUND, as in Kafka (clients then describe it with DescribeGroups).

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::consumer_heartbeat::with_ids;
use super::on_owner;
use crate::groups::error::GroupError;
use crate::shard::Shard;

type Parts = Vec<(Uuid, String, Vec<i32>)>;

/// One member as the owner shard reports it (plain data: it crosses shards).
struct MemberView {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    epoch: i32,
    client_id: String,
    client_host: String,
    topic_names: Vec<String>,
    regex: Option<String>,
    assigned: Parts,
    target: Parts,
}

struct View {
    state: &'static str,
    epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    members: Vec<MemberView>,
}

async fn view(shard: &Rc<Shard>, group: String) -> Result<View, GroupError> {
    if group.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    on_owner(shard, &group.clone(), move |sh| async move {
        let slot = sh.groups.get(&group).ok_or(GroupError::GroupIdNotFound)?;
        let cluster = sh.cluster();
        let c = slot.consumer.borrow();
        let Some(c) = c.as_ref() else {
            return Err(GroupError::GroupIdNotFound);
        };
        Ok(View {
            state: c.state_name(),
            epoch: c.epoch,
            assignment_epoch: c.assignment_epoch,
            assignor: c.assignor.clone(),
            members: c
                .members
                .values()
                .map(|m| MemberView {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    topic_names: m.topic_names.clone(),
                    regex: m.regex.clone(),
                    assigned: with_ids(&cluster, &m.assigned),
                    target: with_ids(&cluster, &c.target.get(&m.id).cloned().unwrap_or_default()),
                })
                .collect(),
        })
    })
    .await
    .and_then(|r| r)
}

fn assignment(parts: Parts) -> Assignment {
    let mut a = Assignment::default();
    a.topic_partitions = parts
        .into_iter()
        .map(|(id, name, ps)| {
            let mut tp = TopicPartitions::default();
            tp.topic_id = id;
            tp.topic_name = TopicName(StrBytes::from_string(name));
            tp.partitions = ps;
            tp
        })
        .collect();
    a
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let lookups = req.group_ids.into_iter().map(|id| async move {
        let r = view(shard, id.0.to_string()).await;
        (id, r)
    });
    let mut resp = ConsumerGroupDescribeResponse::default();
    for (id, result) in futures::future::join_all(lookups).await {
        let mut g = DescribedGroup::default();
        match result {
            Err(e) => {
                g.error_code = e.code();
                g.error_message = Some(StrBytes::from_string(match e {
                    GroupError::GroupIdNotFound => {
                        format!("Group {} is not a consumer group.", id.0)
                    }
                    other => other.to_string(),
                }));
                g.group_state = StrBytes::from_static_str("Dead");
            }
            Ok(v) => {
                g.group_state = StrBytes::from_static_str(v.state);
                g.group_epoch = v.epoch;
                g.assignment_epoch = v.assignment_epoch;
                g.assignor_name = StrBytes::from_string(v.assignor);
                g.members = v
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut d = Member::default();
                        d.member_id = StrBytes::from_string(m.id);
                        d.instance_id = m.instance_id.map(StrBytes::from_string);
                        d.rack_id = m.rack_id.map(StrBytes::from_string);
                        d.member_epoch = m.epoch;
                        d.client_id = StrBytes::from_string(m.client_id);
                        d.client_host = StrBytes::from_string(m.client_host);
                        d.subscribed_topic_names = m
                            .topic_names
                            .into_iter()
                            .map(|t| TopicName(StrBytes::from_string(t)))
                            .collect();
                        d.subscribed_topic_regex = m.regex.map(StrBytes::from_string);
                        d.assignment = assignment(m.assigned);
                        d.target_assignment = assignment(m.target);
                        // v1+: 1 = a member of the consumer protocol.
                        if version >= 1 {
                            d.member_type = 1;
                        }
                        d
                    })
                    .collect();
            }
        }
        g.group_id = id;
        resp.groups.push(g);
    }
    resp
}
