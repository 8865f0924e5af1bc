//! ListGroups v0-v5: every group of every shard, with its state (v4+, filterable
//! by state, case-insensitively) and type (v5+: `classic`, or `consumer` for a
//! group of the consumer protocol, KIP-848; filterable, case-insensitively).
//! No match is an empty list.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors::NONE;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: ListGroupsRequest,
    _version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let per_shard = shard
        .on_all(|sh| async move {
            sh.groups
                .all()
                .into_iter()
                .filter(|slot| slot.exists())
                .map(|slot| {
                    if let Some(c) = slot.consumer.borrow().as_ref() {
                        return (
                            slot.id.clone(),
                            "consumer".to_string(),
                            c.state_name(),
                            "consumer",
                        );
                    }
                    let g = slot.group.borrow();
                    (
                        slot.id.clone(),
                        g.protocol_type.clone().unwrap_or_default(),
                        g.state.name(),
                        "classic",
                    )
                })
                .collect::<Vec<_>>()
        })
        .await;
    let mut resp = ListGroupsResponse::default();
    resp.error_code = NONE;
    let mut all: Vec<_> = per_shard.into_iter().flatten().flatten().collect();
    all.sort();
    for (id, protocol_type, state, group_type) in all {
        if !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == group_type) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(StrBytes::from_string(id));
        g.protocol_type = StrBytes::from_string(protocol_type);
        g.group_state = StrBytes::from_static_str(state);
        g.group_type = StrBytes::from_static_str(group_type);
        resp.groups.push(g);
    }
    resp
}
