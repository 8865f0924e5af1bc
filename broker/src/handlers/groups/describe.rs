//! DescribeGroups v0-v5: state, protocol, and every member with its client id,
//! host, subscription and assignment. A consumer-protocol group (KIP-848) is
//! shown as classic tools expect a consumer group: protocol type `consumer`, the
//! assignor as protocol, and each member's subscription and current assignment
//! in the classic ConsumerProtocol encoding (version 0). A group that does not exist is described
//! as `Dead` with no members and no error, as Kafka does before v6: an empty
//! answer, not an error.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::on_owner;
use crate::groups::error::GroupError;
use crate::shard::Shard;

/// What the owner shard reports about one group (plain data: it crosses shards).
struct View {
    state: &'static str,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
}

struct MemberView {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    metadata: Bytes,
    assignment: Bytes,
}

async fn view(shard: &Rc<Shard>, group: String) -> Result<View, GroupError> {
    on_owner(shard, &group.clone(), move |sh| async move {
        let dead = View {
            state: "Dead",
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        };
        let Some(slot) = sh.groups.get(&group).filter(|s| s.exists()) else {
            return dead;
        };
        if let Some(c) = slot.consumer.borrow().as_ref() {
            return View {
                state: c.state_name(),
                protocol_type: "consumer".into(),
                protocol: c.assignor.clone(),
                members: c
                    .members
                    .values()
                    .map(|m| MemberView {
                        id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: subscription_v0(&m.subscription()),
                        assignment: assignment_v0(&m.assigned),
                    })
                    .collect(),
            };
        }
        let g = slot.group.borrow();
        let protocol = g.protocol.clone().unwrap_or_default();
        let mut members: Vec<MemberView> = g
            .members
            .values()
            .map(|m| MemberView {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        View {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        }
    })
    .await
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let lookups = req.groups.into_iter().map(|id| async move {
        let r = view(shard, id.0.to_string()).await;
        (id, r)
    });
    let mut resp = DescribeGroupsResponse::default();
    for (id, result) in futures::future::join_all(lookups).await {
        let mut g = DescribedGroup::default();
        g.group_id = id;
        match result {
            Err(e) => g.error_code = e.code(),
            Ok(v) => {
                g.group_state = StrBytes::from_static_str(v.state);
                g.protocol_type = StrBytes::from_string(v.protocol_type);
                g.protocol_data = StrBytes::from_string(v.protocol);
                g.members = v
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default();
                        d.member_id = StrBytes::from_string(m.id);
                        // The field exists from v4.
                        if version >= 4 {
                            d.group_instance_id = m.instance_id.map(StrBytes::from_string);
                        }
                        d.client_id = StrBytes::from_string(m.client_id);
                        d.client_host = StrBytes::from_string(m.client_host);
                        d.member_metadata = m.metadata;
                        d.member_assignment = m.assignment;
                        d
                    })
                    .collect();
            }
        }
        resp.groups.push(g);
    }
    resp
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// ConsumerProtocolSubscription v0: version, topics, null user data.
fn subscription_v0(topics: &std::collections::BTreeSet<String>) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        put_str(&mut b, t);
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// ConsumerProtocolAssignment v0: version, partitions by topic, null user data.
fn assignment_v0(a: &crate::groups::assignor::Assignment) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(a.len() as i32).to_be_bytes());
    for (t, ps) in a {
        put_str(&mut b, t);
        b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            b.extend_from_slice(&p.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_protocol_encodings_are_kafkas_v0() {
        let a = crate::groups::assignor::Assignment::from([(
            "t".to_string(),
            std::collections::BTreeSet::from([0, 2]),
        )]);
        assert_eq!(
            &assignment_v0(&a)[..],
            &[
                0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 255, 255, 255,
                255
            ]
        );
        let s = std::collections::BTreeSet::from(["ab".to_string()]);
        assert_eq!(
            &subscription_v0(&s)[..],
            &[0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 255, 255, 255, 255]
        );
    }
}
