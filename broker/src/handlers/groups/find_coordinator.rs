//! FindCoordinator: the broker that owns the group's slot of the coordinators'
//! ownership space (docs/cluster.md, "Consumer groups"); a broker alone
//! coordinates every group. Inside a broker the shards split the groups among
//! themselves. v4 looks up a batch of keys.
//! Transactions are a non-goal, so a transaction key gets the same refusal as
//! InitProducerId with a transactional id.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{
    COORDINATOR_NOT_AVAILABLE, INVALID_REQUEST, NONE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
};
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn handle(
    shard: &Rc<Shard>,
    req: FindCoordinatorRequest,
    version: i16,
    listener: &str,
) -> FindCoordinatorResponse {
    let cluster = shard.cluster();
    let answer = |key: &StrBytes| -> Coordinator {
        let mut c = Coordinator::default();
        c.key = key.clone();
        let error = match req.key_type {
            KEY_TYPE_GROUP if key.is_empty() => INVALID_REQUEST,
            KEY_TYPE_GROUP => NONE,
            KEY_TYPE_TRANSACTION => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            _ => INVALID_REQUEST,
        };
        let coordinator = (error == NONE)
            .then(|| cluster.coordinator(key))
            .flatten()
            .and_then(|id| {
                Some((
                    id,
                    crate::handlers::metadata::endpoint(shard, &cluster, id, listener)?,
                ))
            });
        c.error_code = match (error, &coordinator) {
            (NONE, None) => COORDINATOR_NOT_AVAILABLE,
            (e, _) => e,
        };
        if let Some((id, (host, port))) = coordinator {
            c.node_id = BrokerId(id);
            c.host = StrBytes::from_string(host);
            c.port = port;
        } else {
            c.node_id = BrokerId(-1);
            c.port = -1;
        }
        c
    };
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req.coordinator_keys.iter().map(answer).collect();
    } else {
        let c = answer(&req.key);
        resp.error_code = c.error_code;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}
