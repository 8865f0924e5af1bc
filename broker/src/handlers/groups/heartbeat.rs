//! Heartbeat v0-v4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it
//! to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::on_owner;
use crate::groups::error::{code_of, GroupError};
use crate::groups::{check_group_id, instance_id, settle};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let result = match check_group_id(&group) {
        Err(e) => Err(e),
        Ok(()) => on_owner(shard, &group.clone(), move |sh| async move {
            let Some(slot) = sh.groups.get(&group) else {
                return Err(GroupError::UnknownMemberId);
            };
            let instance = instance_id(&req.group_instance_id);
            let r = slot.group.borrow_mut().heartbeat(
                &req.member_id,
                instance.as_deref(),
                req.generation_id,
                sh.groups.now(),
            );
            settle(&sh.groups, &slot);
            r
        })
        .await
        .and_then(|r| r),
    };
    let mut resp = HeartbeatResponse::default();
    resp.error_code = code_of(&result);
    resp
}
