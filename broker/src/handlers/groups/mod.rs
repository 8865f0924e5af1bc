//! The consumer-group APIs (classic protocol), one file per API. A request is
//! decoded on the connection's shard and forwarded to the shard that owns the
//! group (`placement::group_shard`), where `crate::groups` keeps its state.

pub mod delete;
pub mod describe;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join;
pub mod leave;
pub mod list;
pub mod offset_commit;
pub mod offset_fetch;
pub mod sync;

use std::future::Future;
use std::rc::Rc;

use crate::groups::error::GroupError;
use crate::placement::group_shard;
use crate::shard::Shard;

/// Runs `f` on the shard that owns `group`.
pub async fn on_owner<R, F, Fut>(shard: &Rc<Shard>, group: &str, f: F) -> Result<R, GroupError>
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    shard
        .on(group_shard(group, shard.count), f)
        .await
        .map_err(|_| GroupError::CoordinatorNotAvailable)
}
