//! `KAFSCALE_TRACE_KAFKA=true`: one log line per Kafka request. The connection
//! checks one boolean before calling here, so tracing costs nothing when off.

use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseKind};
use tracing::info;

/// The error code a request's trace line shows: the response's top-level code
/// when it is an error, else the first per-topic/partition/group error, else 0.
pub fn error_code(r: &ResponseKind) -> i16 {
    fn first(codes: impl IntoIterator<Item = i16>) -> i16 {
        codes.into_iter().find(|&c| c != 0).unwrap_or(0)
    }
    match r {
        ResponseKind::Produce(r) => first(
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Fetch(r) => first(
            std::iter::once(r.error_code).chain(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            ),
        ),
        ResponseKind::ListOffsets(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Metadata(r) => first(
            r.topics.iter().map(|t| t.error_code).chain(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            ),
        ),
        ResponseKind::OffsetCommit(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::OffsetFetch(r) => first(
            std::iter::once(r.error_code)
                .chain(
                    r.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
                )
                .chain(r.groups.iter().map(|g| g.error_code))
                .chain(r.groups.iter().flat_map(|g| {
                    g.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                })),
        ),
        ResponseKind::FindCoordinator(r) => {
            first(std::iter::once(r.error_code).chain(r.coordinators.iter().map(|c| c.error_code)))
        }
        ResponseKind::JoinGroup(r) => r.error_code,
        ResponseKind::Heartbeat(r) => r.error_code,
        ResponseKind::SyncGroup(r) => r.error_code,
        ResponseKind::LeaveGroup(r) => {
            first(std::iter::once(r.error_code).chain(r.members.iter().map(|m| m.error_code)))
        }
        ResponseKind::DescribeGroups(r) => first(r.groups.iter().map(|g| g.error_code)),
        ResponseKind::ListGroups(r) => r.error_code,
        ResponseKind::DeleteGroups(r) => first(r.results.iter().map(|g| g.error_code)),
        ResponseKind::ApiVersions(r) => r.error_code,
        ResponseKind::InitProducerId(r) => r.error_code,
        ResponseKind::CreateTopics(r) => first(r.topics.iter().map(|t| t.error_code)),
        ResponseKind::DeleteTopics(r) => first(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::CreatePartitions(r) => first(r.results.iter().map(|t| t.error_code)),
        ResponseKind::DescribeConfigs(r) => first(r.results.iter().map(|t| t.error_code)),
        ResponseKind::AlterConfigs(r) => first(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => first(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::OffsetForLeaderEpoch(r) => first(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        // Only APIs from the version table reach a handler; all are listed above.
        _ => 0,
    }
}

/// What one trace line reports.
pub struct Request<'a> {
    pub peer: &'a str,
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: &'a str,
    pub started: std::time::Instant,
    /// `None` for requests answered with nothing (`acks=0` produce).
    pub error_code: Option<i16>,
    /// Per-partition outcomes where one code per request hides which partition
    /// failed (produce: `topic/partition=code@base_offset` for every partition).
    pub detail: Option<String>,
}

/// The per-partition part of a trace line, for the APIs that have one.
pub fn detail(r: &ResponseKind) -> Option<String> {
    match r {
        ResponseKind::Produce(p) => Some(produce_detail(p)),
        _ => None,
    }
}

/// `topic/partition=error_code@base_offset` for every partition of a produce
/// response, space-separated, in response order.
pub fn produce_detail(r: &ProduceResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for t in &r.responses {
        for p in &t.partition_responses {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(
                out,
                "{}/{}={}@{}",
                t.name.0.as_str(),
                p.index,
                p.error_code,
                p.base_offset
            );
        }
    }
    out
}

pub fn log(r: Request<'_>) {
    let micros = r.started.elapsed().as_micros() as u64;
    // ApiKey's Debug form is Kafka's API name (`Produce`, `ApiVersions`, ...).
    let api = r.api;
    // Absent from the line when None (tracing skips a None field).
    let partitions = r.detail.as_deref();
    match r.error_code {
        Some(code) => info!(
            peer = r.peer,
            ?api,
            version = r.version,
            correlation_id = r.correlation_id,
            client_id = r.client_id,
            micros,
            error_code = code,
            partitions,
            "kafka request"
        ),
        None => info!(
            peer = r.peer,
            ?api,
            version = r.version,
            correlation_id = r.correlation_id,
            client_id = r.client_id,
            micros,
            response = "none",
            partitions,
            "kafka request"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{HeartbeatResponse, ProduceResponse};

    #[test]
    fn first_partition_error_is_reported() {
        let mut r = ProduceResponse::default();
        let mut t = TopicProduceResponse::default();
        for code in [0, 6, 3] {
            let mut p = PartitionProduceResponse::default();
            p.error_code = code;
            t.partition_responses.push(p);
        }
        r.responses.push(t);
        assert_eq!(error_code(&ResponseKind::Produce(r)), 6);
        assert_eq!(
            error_code(&ResponseKind::Produce(ProduceResponse::default())),
            0
        );
    }

    #[test]
    fn every_produce_partition_is_in_the_detail() {
        let mut r = ProduceResponse::default();
        let mut t = TopicProduceResponse::default();
        t.name = kafka_protocol::messages::TopicName(
            kafka_protocol::protocol::StrBytes::from_static_str("orders"),
        );
        for (i, (code, base)) in [(0, 652), (6, -1)].into_iter().enumerate() {
            let mut p = PartitionProduceResponse::default();
            p.index = i as i32;
            p.error_code = code;
            p.base_offset = base;
            t.partition_responses.push(p);
        }
        r.responses.push(t);
        assert_eq!(produce_detail(&r), "orders/0=0@652 orders/1=6@-1");
        assert_eq!(
            detail(&ResponseKind::Produce(r)).as_deref(),
            Some("orders/0=0@652 orders/1=6@-1")
        );
        assert_eq!(detail(&ResponseKind::Heartbeat(Default::default())), None);
    }

    #[test]
    fn top_level_errors_are_reported() {
        let mut h = HeartbeatResponse::default();
        h.error_code = 27;
        assert_eq!(error_code(&ResponseKind::Heartbeat(h)), 27);
    }
}

/// True when an admin response carries an error code for any of its topics,
/// resources, groups or partitions (non-admin responses: false).
pub fn admin_failed(api: i16, resp: &ResponseKind) -> bool {
    // `is_admin` first: the hot Produce/Fetch path never walks its response.
    crate::obs::admin::is_admin(api) && error_code(resp) != 0
}

#[cfg(test)]
mod admin_tests {
    use super::*;
    use kafka_protocol::messages::{CreateTopicsResponse, ListGroupsResponse};

    #[test]
    fn admin_errors_are_found_in_the_response() {
        assert!(crate::obs::admin::is_admin(ApiKey::CreateTopics as i16));
        assert!(!crate::obs::admin::is_admin(ApiKey::Produce as i16));
        let mut ok = CreateTopicsResponse::default();
        ok.topics.push(Default::default());
        assert!(!admin_failed(
            ApiKey::CreateTopics as i16,
            &ResponseKind::CreateTopics(ok.clone())
        ));
        let mut bad = ok;
        let mut t =
            kafka_protocol::messages::create_topics_response::CreatableTopicResult::default();
        t.error_code = 36;
        bad.topics.push(t);
        assert!(admin_failed(
            ApiKey::CreateTopics as i16,
            &ResponseKind::CreateTopics(bad)
        ));
        let mut lg = ListGroupsResponse::default();
        lg.error_code = 15;
        assert!(admin_failed(
            ApiKey::ListGroups as i16,
            &ResponseKind::ListGroups(lg)
        ));
    }
}
