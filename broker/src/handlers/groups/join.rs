//! JoinGroup v0-v9: forwarded to the group's shard, where the member waits until
//! the rebalance completes (or gets MEMBER_ID_REQUIRED, v4+).

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::on_owner;
use crate::groups::coordinator::{JoinOk, JoinParams};
use crate::groups::error::GroupError;
use crate::groups::{check_group_id, instance_id, settle};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    let given_member = req.member_id.to_string();
    let params = JoinParams {
        member_id: given_member.clone(),
        instance_id: instance_id(&req.group_instance_id),
        client_id,
        client_host,
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let result = match check_group_id(&group) {
        Err(e) => Err(e),
        Ok(()) => on_owner(shard, &group.clone(), move |sh| async move {
            let slot = sh.groups.get_or_create(&group);
            {
                let mut c = slot.consumer.borrow_mut();
                if c.as_ref().is_some_and(|c| !c.is_empty()) {
                    // A consumer-protocol group with members takes no classic
                    // members (Kafka without an online downgrade).
                    return Err(GroupError::InconsistentGroupProtocol);
                }
                // An empty consumer-protocol group becomes a classic one.
                *c = None;
            }
            let reply = slot
                .group
                .borrow_mut()
                .join(params, sh.groups.now(), &sh.groups.config());
            if sh.is_shutting_down() {
                // Nobody waits on a broker that is stopping: find the coordinator again.
                slot.group
                    .borrow_mut()
                    .release_waiters(GroupError::NotCoordinator);
            }
            settle(&sh.groups, &slot);
            let r = reply.wait().await;
            // Completing the rebalance changed the group (and woke this join).
            settle(&sh.groups, &slot);
            r
        })
        .await
        .and_then(|r| r),
    };
    response(result, version, given_member)
}

fn response(
    result: Result<JoinOk, GroupError>,
    version: i16,
    given_member: String,
) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default();
    match result {
        Ok(ok) => {
            resp.generation_id = ok.generation;
            if version >= 7 {
                resp.protocol_type = Some(StrBytes::from_string(ok.protocol_type));
            }
            resp.protocol_name = Some(StrBytes::from_string(ok.protocol_name.unwrap_or_default()));
            resp.leader = StrBytes::from_string(ok.leader);
            resp.skip_assignment = ok.skip_assignment && version >= 9;
            resp.member_id = StrBytes::from_string(ok.member_id);
            resp.members = ok
                .members
                .into_iter()
                .map(|m| {
                    let mut r = JoinGroupResponseMember::default();
                    r.member_id = StrBytes::from_string(m.member_id);
                    if version >= 5 {
                        r.group_instance_id = m.instance_id.map(StrBytes::from_string);
                    }
                    r.metadata = m.metadata;
                    r
                })
                .collect();
        }
        Err(e) => {
            resp.error_code = e.code();
            resp.generation_id = -1;
            // Before v7 the protocol name is not nullable.
            resp.protocol_name = if version >= 7 {
                None
            } else {
                Some(StrBytes::default())
            };
            resp.member_id = StrBytes::from_string(match e {
                GroupError::MemberIdRequired(id) => id,
                _ => given_member,
            });
        }
    }
    resp
}
