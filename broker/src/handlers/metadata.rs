//! Metadata: the live brokers and each partition's leader, the broker the
//! controller assigned it to (docs/cluster.md); a broker alone leads everything.
//! Storage is shared, so there are no replicas to report beyond the leader. A
//! partition without a live assignee has no leader (LEADER_NOT_AVAILABLE, which
//! clients retry). Unknown topics are created when auto-creation is on and the
//! client allows it.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{
    INVALID_TOPIC_EXCEPTION, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION,
};
use crate::metadata::{valid_topic_name, Cluster, TopicMeta};
use crate::shard::Shard;

/// The address clients of `listener` reach broker `id` at: its advertised
/// address for that listener; a broker that registered no listeners (it
/// predates them) by its one address; None for a broker without the listener.
pub fn endpoint(
    shard: &Shard,
    cluster: &Cluster,
    id: i32,
    listener: &str,
) -> Option<(String, i32)> {
    if id == cluster.broker_id {
        return shard
            .settings
            .security
            .listeners
            .iter()
            .find(|l| l.name == listener)
            .map(|l| (l.advertised_host.clone(), l.advertised_port()));
    }
    if !cluster.live.clustered {
        return None;
    }
    let primary = cluster.live.brokers.get(&id)?;
    match cluster.live.listeners.get(&id) {
        Some(ls) if !ls.is_empty() => ls
            .iter()
            .find(|(name, _, _)| name == listener)
            .map(|(_, h, p)| (h.clone(), *p)),
        _ => Some(primary.clone()),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    // v0 has no null topic list: an empty list means all topics.
    let requested: Option<Vec<_>> = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let allow_auto = version < 4 || req.allow_auto_topic_creation;
    if let (Some(topics), true) = (&requested, allow_auto && shard.settings.auto_create_topics) {
        let cluster = shard.cluster();
        let missing: Vec<String> = topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| cluster.topic(n).is_none() && valid_topic_name(n))
            .collect();
        if !missing.is_empty() {
            super::topics::auto_create(shard, missing).await;
        }
    }
    let cluster = shard.cluster();
    let mut resp = MetadataResponse::default();
    let describe_broker = |id: i32, host: &str, port: i32| {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = StrBytes::from_string(host.to_string());
        b.port = port;
        b
    };
    let ids: Vec<i32> = if cluster.live.clustered {
        cluster.live.brokers.keys().copied().collect()
    } else {
        vec![cluster.broker_id]
    };
    // As in Kafka, a broker without the client's listener is left out.
    resp.brokers = ids
        .into_iter()
        .filter_map(|id| {
            let (host, port) = endpoint(shard, &cluster, id, listener)?;
            Some(describe_broker(id, &host, port))
        })
        .collect();
    resp.cluster_id = Some(StrBytes::from_string(cluster.cluster_id.clone()));
    resp.controller_id = BrokerId(cluster.controller_id());
    let describe = |t: &TopicMeta| {
        let mut out = MetadataResponseTopic::default();
        out.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
        out.topic_id = t.id;
        out.partitions = (0..t.partitions)
            .map(|i| {
                let mut p = MetadataResponsePartition::default();
                p.partition_index = i;
                // Grows with every claim; clients fence stale metadata with it.
                p.leader_epoch = cluster.leader_epoch(t, i);
                match cluster.leader(t, i) {
                    Some(leader) => {
                        p.leader_id = BrokerId(leader);
                        p.replica_nodes = vec![BrokerId(leader)];
                        p.isr_nodes = vec![BrokerId(leader)];
                    }
                    None => {
                        p.error_code = LEADER_NOT_AVAILABLE;
                        p.leader_id = BrokerId(-1);
                    }
                }
                p
            })
            .collect();
        out
    };
    resp.topics = match requested {
        None => {
            let mut all: Vec<_> = cluster.topics.values().collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            all.into_iter().map(|t| describe(t)).collect()
        }
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let found = match &t.name {
                    Some(n) => cluster.topic(&n.0),
                    None => cluster.by_id.get(&t.topic_id),
                };
                match found {
                    Some(meta) => describe(meta),
                    None => {
                        let mut out = MetadataResponseTopic::default();
                        out.error_code = match &t.name {
                            Some(n) if !valid_topic_name(&n.0) => INVALID_TOPIC_EXCEPTION,
                            Some(_) => UNKNOWN_TOPIC_OR_PARTITION,
                            None => UNKNOWN_TOPIC_ID,
                        };
                        out.name = t.name;
                        out.topic_id = t.topic_id;
                        out
                    }
                }
            })
            .collect(),
    };
    resp
}
