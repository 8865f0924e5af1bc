//! LeaveGroup v0-v5: one member (v0-v2) or a batch identified by member id and/or
//! group.instance.id (v3+), with an error per member.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::on_owner;
use crate::groups::error::GroupError;
use crate::groups::{check_group_id, instance_id, settle};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), instance_id(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let n = leaving.len();
    let who = leaving.clone();
    let results: Result<Vec<Result<(), GroupError>>, GroupError> = match check_group_id(&group) {
        Err(e) => Err(e),
        Ok(()) => {
            on_owner(shard, &group.clone(), move |sh| async move {
                let Some(slot) = sh.groups.get(&group) else {
                    return vec![Err(GroupError::UnknownMemberId); n];
                };
                let r = slot.group.borrow_mut().leave(&leaving, sh.groups.now());
                settle(&sh.groups, &slot);
                r
            })
            .await
        }
    };
    let mut resp = LeaveGroupResponse::default();
    match results {
        Err(e) => resp.error_code = e.code(),
        Ok(results) if version >= 3 => {
            resp.members = who
                .into_iter()
                .zip(results)
                .map(|((member_id, instance_id), r)| {
                    let mut m = MemberResponse::default();
                    m.member_id = StrBytes::from_string(member_id);
                    m.group_instance_id = instance_id.map(StrBytes::from_string);
                    m.error_code = r.err().map(|e| e.code()).unwrap_or(0);
                    m
                })
                .collect();
        }
        Ok(results) => {
            resp.error_code = results
                .into_iter()
                .find_map(|r| r.err())
                .map(|e| e.code())
                .unwrap_or(0);
        }
    }
    resp
}
