//! SyncGroup v0-v5: the leader's assignment is stored and handed to each member
//! verbatim; followers wait for it on the group's shard.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::on_owner;
use crate::groups::error::GroupError;
use crate::groups::{check_group_id, instance_id, settle};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let result = match check_group_id(&group) {
        Err(e) => Err(e),
        Ok(()) => on_owner(shard, &group.clone(), move |sh| async move {
            let Some(slot) = sh.groups.get(&group) else {
                return Err(GroupError::UnknownMemberId);
            };
            let instance = instance_id(&req.group_instance_id);
            let reply = slot.group.borrow_mut().sync(
                &req.member_id,
                instance.as_deref(),
                req.generation_id,
                req.protocol_type.as_deref(),
                req.protocol_name.as_deref(),
                req.assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect(),
                sh.groups.now(),
            );
            if sh.is_shutting_down() {
                // Nobody waits on a broker that is stopping: find the coordinator again.
                slot.group
                    .borrow_mut()
                    .release_waiters(GroupError::NotCoordinator);
            }
            settle(&sh.groups, &slot);
            reply.wait().await
        })
        .await
        .and_then(|r| r),
    };
    let mut resp = SyncGroupResponse::default();
    match result {
        Ok(ok) => {
            if version >= 5 {
                resp.protocol_type = Some(StrBytes::from_string(ok.protocol_type));
                resp.protocol_name = ok.protocol_name.map(StrBytes::from_string);
            }
            resp.assignment = ok.assignment;
        }
        Err(e) => resp.error_code = e.code(),
    }
    resp
}
