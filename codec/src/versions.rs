//! The API versions this broker implements. ApiVersions advertises exactly this
//! table, and requests outside it are refused before they are decoded.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// `(api, min, max)` for every implemented API. Minimums are Apache Kafka 3.9's:
/// the versions KIP-896 removed in Kafka 4.0 are decodable through the vendored
/// crate's patch (third_party/kafka-protocol/KAFSCALE.md), and the message
/// formats of Produce v0-2 and Fetch v0-3 (magic 0/1) are converted by
/// `legacy.rs`. Maximums are Kafka 3.9's too, except Produce and Fetch (which
/// stop at v9/v13). The group APIs include the consumer protocol of KIP-848
/// (ConsumerGroupHeartbeat, ConsumerGroupDescribe, OffsetCommit/OffsetFetch v9).
/// APIs not in this table are absent from ApiVersions, which every client reads
/// as unsupported.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 0, 13),
    (ApiKey::ListOffsets, 0, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // The consumer group protocol (KIP-848); OffsetCommit/OffsetFetch v9 carry
    // its member epochs.
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    // SASL (docs/security.md): after SaslHandshake v0 the tokens travel as raw
    // size-prefixed frames (connection.rs); kcat 1.7 (librdkafka 2.0) starts SASL
    // only when v0 is listed.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (docs/security.md): always listed, as by Kafka, and answered with
    // SECURITY_DISABLED when no authorizer is configured. v0 (no pattern type)
    // was removed in Kafka 4.0 and is not decodable here.
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The supported version range of an API, if it is implemented at all.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// Whether `version` of `key` is implemented.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    matches!(supported(key), Some((lo, hi)) if (lo..=hi).contains(&version))
}

/// The ApiVersions answer. It carries no feature tags: old librdkafka (kcat 1.7)
/// misparses tagged fields it does not know in a v3 response.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn every_advertised_range_is_within_what_the_codec_can_decode() {
        for &(k, lo, hi) in SUPPORTED {
            let valid = k.valid_versions();
            assert!(
                lo >= valid.min && hi <= valid.max,
                "{k:?} {lo}..{hi} vs {valid:?}"
            );
        }
    }

    #[test]
    fn v3_response_has_no_tagged_fields() {
        let r = api_versions_response(0);
        let mut buf = bytes::BytesMut::new();
        r.encode(&mut buf, 3).unwrap();
        // error_code, compact array, throttle time, then the tag count: zero.
        assert_eq!(*buf.last().unwrap(), 0);
        assert!(is_supported(ApiKey::Fetch, 13));
        assert!(is_supported(ApiKey::Fetch, 0));
        assert!(is_supported(ApiKey::Produce, 0));
        assert!(is_supported(ApiKey::JoinGroup, 0));
        assert!(is_supported(ApiKey::OffsetCommit, 9));
        assert!(!is_supported(ApiKey::OffsetCommit, 10));
        assert!(is_supported(ApiKey::ConsumerGroupHeartbeat, 1));
        assert!(is_supported(ApiKey::DescribeGroups, 0));
        assert!(!is_supported(ApiKey::DescribeGroups, 6));
        assert!(is_supported(ApiKey::DescribeConfigs, 0));
        assert!(is_supported(ApiKey::DeleteRecords, 0));
        assert!(is_supported(ApiKey::DescribeLogDirs, 0));
    }
}
