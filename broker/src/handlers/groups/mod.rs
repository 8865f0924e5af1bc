//! The consumer-group APIs, one file per API: the classic protocol and the
//! consumer protocol of KIP-848 (`consumer_heartbeat`, `consumer_describe`). A request is
//! decoded on the connection's shard and forwarded to the shard that owns the
//! group (`placement::group_shard`), where `crate::groups` keeps its state.

pub mod consumer_describe;
pub mod consumer_heartbeat;
pub mod delete;
pub mod describe;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join;
pub mod leave;
pub mod list;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync;

use std::future::Future;
use std::rc::Rc;

use crate::groups::error::GroupError;
use crate::metadata::group_slot;
use crate::placement::group_shard;
use crate::shard::Shard;

/// Runs `f` on the shard that owns `group`, if this broker coordinates it
/// (NOT_COORDINATOR otherwise; COORDINATOR_LOAD_IN_PROGRESS while it reads the
/// group after taking over its slot).
pub async fn on_owner<R, F, Fut>(shard: &Rc<Shard>, group: &str, f: F) -> Result<R, GroupError>
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let cluster = shard.cluster();
    if cluster.coordinator(group) != Some(cluster.broker_id) {
        return Err(GroupError::NotCoordinator);
    }
    let slot = group_slot(group);
    shard
        .on(group_shard(group, shard.count), move |sh| async move {
            if sh.groups.loading(slot) {
                return Err(GroupError::CoordinatorLoadInProgress);
            }
            Ok(f(sh).await)
        })
        .await
        .map_err(|_| GroupError::CoordinatorNotAvailable)?
}
