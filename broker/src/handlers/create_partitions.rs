//! CreatePartitions v0-v3: additive only. Fewer or as many partitions as the
//! topic has answers INVALID_PARTITIONS; explicit assignments must name one
//! replica list per new partition (the broker places partitions itself, so their
//! content is not used). The new count is persisted and published to every
//! shard like any topic change, so new partitions serve at once and appear in
//! Metadata; their logs start empty.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topics::update_topic;
use crate::errors::{INVALID_PARTITIONS, INVALID_REPLICA_ASSIGNMENT, NONE, POLICY_VIOLATION};
use crate::shard::Shard;

/// Upper bound on a topic's partitions: each one is a key prefix and, when
/// touched, state on a shard.
pub const MAX_PARTITIONS: i32 = 100_000;

pub async fn handle(
    shard: &Rc<Shard>,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    let limits = shard.settings.limits;
    for t in req.topics {
        let count = t.count;
        let cluster = shard.cluster();
        let total: usize = cluster
            .topics
            .values()
            .map(|t| t.partitions.max(0) as usize)
            .sum();
        let assignments = t.assignments.as_ref().map(|a| a.len());
        let result = update_topic(shard, t.name.0.to_string(), req.validate_only, move |cur| {
            if count <= cur.partitions {
                return Err((
                    INVALID_PARTITIONS,
                    format!(
                        "topic has {} partitions; the count can only grow (requested {count})",
                        cur.partitions
                    ),
                ));
            }
            let max = MAX_PARTITIONS.min(limits.max_partitions_per_topic);
            if count > max {
                return Err((
                    INVALID_PARTITIONS,
                    format!("at most {max} partitions per topic (KAFSCALE_MAX_PARTITIONS_PER_TOPIC)"),
                ));
            }
            let added = (count - cur.partitions) as usize;
            if total.saturating_add(added) > limits.max_partitions {
                return Err((
                    POLICY_VIOLATION,
                    format!(
                        "the cluster holds {total} partitions; {added} more exceed KAFSCALE_MAX_PARTITIONS ({})",
                        limits.max_partitions
                    ),
                ));
            }
            if let Some(n) = assignments.filter(|n| *n != added) {
                return Err((
                    INVALID_REPLICA_ASSIGNMENT,
                    format!("{n} assignments for {added} new partitions"),
                ));
            }
            let mut next = cur.clone();
            next.partitions = count;
            Ok(next)
        })
        .await;
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name;
        match result {
            Ok(()) => r.error_code = NONE,
            Err((code, message)) => {
                r.error_code = code;
                r.error_message = Some(StrBytes::from_string(message));
            }
        }
        resp.results.push(r);
    }
    resp
}
