//! DescribeCluster v0-v2: the cluster id, the controller and the live brokers, as
//! Metadata reports them (a broker alone is its own controller). No broker is
//! ever fenced (a broker whose lease lapses leaves the live set), each broker is
//! given by its address on the client's listener (left out without one), and only the
//! broker endpoint type exists: asking for controllers (v1+, endpoint type 2)
//! is UNSUPPORTED_ENDPOINT_TYPE, as from a Kafka broker.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors::KafkaError;
use crate::shard::Shard;

/// DescribeCluster's endpoint types (KIP-919).
const ENDPOINT_BROKERS: i8 = 1;

/// Kafka's "authorized operations not computed" marker.
const OPERATIONS_UNKNOWN: i32 = i32::MIN;

pub fn handle(
    shard: &Rc<Shard>,
    req: DescribeClusterRequest,
    version: i16,
    listener: &str,
) -> DescribeClusterResponse {
    let cluster = shard.cluster();
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = ENDPOINT_BROKERS;
    resp.cluster_id = StrBytes::from_string(cluster.cluster_id.clone());
    resp.cluster_authorized_operations = OPERATIONS_UNKNOWN;
    if version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        resp.error_code = KafkaError::UnsupportedEndpointType.code();
        resp.error_message = Some(StrBytes::from_static_str(
            "only the broker endpoint type exists: brokers are their own controllers",
        ));
        resp.controller_id = BrokerId(-1);
        return resp;
    }
    resp.error_message = None;
    resp.controller_id = BrokerId(cluster.controller_id());
    resp.brokers = cluster
        .brokers()
        .into_iter()
        .filter_map(|(id, _, _)| {
            let (host, port) = super::metadata::endpoint(shard, &cluster, id, listener)?;
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(id);
            b.host = StrBytes::from_string(host);
            b.port = port;
            b.rack = None;
            Some(b)
        })
        .collect();
    resp
}
