//! DescribeGroups v0-v5: state, protocol, and every member with its client id,
//! host, subscription and assignment. A group that does not exist is described
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
