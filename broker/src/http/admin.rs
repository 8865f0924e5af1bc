//! Which Kafka APIs are "admin" requests for the `kafscale_admin_*` metrics (the
//! Go Kafscale's names), and whether an admin response reports an error.

use kafka_protocol::messages::{ApiKey, ResponseKind};

/// Topic, config and group administration, and the leader-epoch lookup the Go
/// Kafscale counts with them.
pub const ADMIN_APIS: [ApiKey; 10] = [
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetForLeaderEpoch,
];

pub fn is_admin(api: i16) -> bool {
    ADMIN_APIS.iter().any(|a| *a as i16 == api)
}

/// True when an admin response carries an error code for any of its topics,
/// resources, groups or partitions (non-admin responses: false).
pub fn failed(api: i16, resp: &ResponseKind) -> bool {
    // `is_admin` first: the hot Produce/Fetch path never walks its response.
    is_admin(api) && crate::handlers::trace::error_code(resp) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{CreateTopicsResponse, ListGroupsResponse};

    #[test]
    fn admin_errors_are_found_in_the_response() {
        assert!(is_admin(ApiKey::CreateTopics as i16));
        assert!(!is_admin(ApiKey::Produce as i16));
        let mut ok = CreateTopicsResponse::default();
        ok.topics.push(Default::default());
        assert!(!failed(
            ApiKey::CreateTopics as i16,
            &ResponseKind::CreateTopics(ok.clone())
        ));
        let mut bad = ok;
        let mut t =
            kafka_protocol::messages::create_topics_response::CreatableTopicResult::default();
        t.error_code = 36;
        bad.topics.push(t);
        assert!(failed(
            ApiKey::CreateTopics as i16,
            &ResponseKind::CreateTopics(bad)
        ));
        let mut lg = ListGroupsResponse::default();
        lg.error_code = 15;
        assert!(failed(
            ApiKey::ListGroups as i16,
            &ResponseKind::ListGroups(lg)
        ));
    }
}
