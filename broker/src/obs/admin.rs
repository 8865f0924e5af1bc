//! Which Kafka APIs are "admin" requests for the `kafscale_admin_*` metrics (the
//! Go Kafscale's names).

use kafka_protocol::messages::ApiKey;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_apis_are_the_go_kafscale_ones() {
        assert!(is_admin(ApiKey::CreateTopics as i16));
        assert!(is_admin(ApiKey::OffsetForLeaderEpoch as i16));
        assert!(!is_admin(ApiKey::Produce as i16));
    }
}
