//! DeleteGroups v0-v2: removes a group's metadata and committed offsets (never
//! topic data), with one error per group: GROUP_ID_NOT_FOUND for a group that
//! does not exist, NON_EMPTY_GROUP while it has members.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use tracing::{info, warn};

use super::on_owner;
use crate::groups::check_group_id;
use crate::groups::error::{code_of, GroupError};
use crate::shard::Shard;

async fn delete_one(shard: &Rc<Shard>, group: String) -> Result<(), GroupError> {
    check_group_id(&group)?;
    on_owner(shard, &group.clone(), move |sh| async move {
        let Some(slot) = sh.groups.get(&group).filter(|s| s.exists()) else {
            return Err(GroupError::GroupIdNotFound);
        };
        // Behind the group's write lock, so no commit or metadata write of the
        // group lands in the store after the delete.
        let _w = slot.write_lock.lock().await;
        if slot.has_members() {
            return Err(GroupError::NonEmptyGroup);
        }
        let claim = sh.groups.claim_for(&group)?;
        let store = sh.meta.clone();
        let id = group.clone();
        if let Err(e) = sh
            .io
            .call(async move { store.delete_group(&id, claim).await })
            .await
        {
            warn!(group = %group, error = %e, "deleting group failed");
            return Err(GroupError::Storage);
        }
        // A background metadata write still holding the slot now finds it empty
        // and without offsets, and deletes (idempotently) rather than stores.
        slot.offsets.borrow_mut().clear();
        sh.groups.remove(&group);
        info!(group = %group, "group deleted");
        Ok(())
    })
    .await
    .and_then(|r| r)
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let deletions = req.groups_names.into_iter().map(|id| async move {
        let r = delete_one(shard, id.0.to_string()).await;
        (id, r)
    });
    let mut resp = DeleteGroupsResponse::default();
    for (id, result) in futures::future::join_all(deletions).await {
        let mut r = DeletableGroupResult::default();
        r.group_id = id;
        r.error_code = code_of(&result);
        resp.results.push(r);
    }
    resp
}
