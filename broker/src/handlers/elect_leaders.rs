//! ElectLeaders v0-v2. A Kafscale partition has one replica, the broker the
//! controller assigned it to (docs/cluster.md), so there is never a leader to
//! elect: a partition with a live leader answers ELECTION_NOT_NEEDED (what Kafka
//! answers when the preferred replica already leads), one whose assignee is not
//! live ELIGIBLE_LEADERS_NOT_AVAILABLE (the controller reassigns it by itself),
//! an unknown one UNKNOWN_TOPIC_OR_PARTITION. Asked for every partition (a null
//! list), only partitions with something to report are listed, as in Kafka.
//! Both election types (preferred, unclean) are answered alike: no replica can
//! be behind another.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{KafkaError, NONE, UNKNOWN_TOPIC_OR_PARTITION};
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, req: ElectLeadersRequest, _version: i16) -> ElectLeadersResponse {
    let cluster = shard.cluster();
    let all = req.topic_partitions.is_none();
    let wanted: Vec<(String, Vec<i32>)> = match req.topic_partitions {
        Some(tps) => tps
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => cluster.all_partitions(),
    };
    let mut resp = ElectLeadersResponse::default();
    resp.error_code = NONE;
    for (topic, parts) in wanted {
        let meta = cluster.topic(&topic);
        let mut r = ReplicaElectionResult::default();
        r.topic = TopicName(StrBytes::from_string(topic.clone()));
        for i in parts {
            let (code, why) = match meta {
                Some(t) if (0..t.partitions).contains(&i) => match cluster.leader(t, i) {
                    Some(_) => (
                        KafkaError::ElectionNotNeeded.code(),
                        "the partition's only replica leads it",
                    ),
                    None => (
                        KafkaError::EligibleLeadersNotAvailable.code(),
                        "the partition's broker is not live; the controller reassigns it",
                    ),
                },
                _ => (UNKNOWN_TOPIC_OR_PARTITION, "unknown topic or partition"),
            };
            if all && code == KafkaError::ElectionNotNeeded.code() {
                continue;
            }
            let mut p = PartitionResult::default();
            p.partition_id = i;
            p.error_code = code;
            p.error_message = Some(StrBytes::from_static_str(why));
            r.partition_result.push(p);
        }
        if !(all && r.partition_result.is_empty()) {
            resp.replica_election_results.push(r);
        }
    }
    resp
}
