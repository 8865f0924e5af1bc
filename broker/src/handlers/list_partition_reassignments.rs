//! ListPartitionReassignments v0. Partitions have one replica and move between
//! brokers by an ownership handoff (docs/cluster.md), never by adding and
//! removing replicas, so no reassignment is ever in progress: the answer lists
//! none, for any topics asked about.

use kafka_protocol::messages::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use crate::errors::NONE;

pub fn handle(
    _req: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    let mut resp = ListPartitionReassignmentsResponse::default();
    resp.error_code = NONE;
    resp.error_message = None;
    resp
}
