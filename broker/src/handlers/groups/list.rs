//! ListGroups v0-v5: every group of every shard, with its state (v4+, filterable
//! by state, case-insensitively) and type (v5+; all groups are `classic`, so a
//! types filter without `classic` matches nothing). No match is an empty list.

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
    let types_ok = req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let per_shard = shard
        .on_all(|sh| async move {
            sh.groups
                .all()
                .into_iter()
                .filter(|slot| slot.exists())
                .map(|slot| {
                    let g = slot.group.borrow();
                    (
                        slot.id.clone(),
                        g.protocol_type.clone().unwrap_or_default(),
                        g.state.name(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .await;
    let mut resp = ListGroupsResponse::default();
    resp.error_code = NONE;
    if !types_ok {
        return resp;
    }
    let mut all: Vec<_> = per_shard.into_iter().flatten().flatten().collect();
    all.sort();
    for (id, protocol_type, state) in all {
        if !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(StrBytes::from_string(id));
        g.protocol_type = StrBytes::from_string(protocol_type);
        g.group_state = StrBytes::from_static_str(state);
        g.group_type = StrBytes::from_static_str("classic");
        resp.groups.push(g);
    }
    resp
}
