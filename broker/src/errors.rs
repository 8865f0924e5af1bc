//! Kafka error codes the broker answers with, named once. Internal errors are
//! typed in their crates; this is where they become numbers on the wire.

use kafscale_codec::KafkaError as K;

/// A Kafka error on its way from the log to the protocol edge: the partition
/// code returns `Result<_, KafkaError>`, and handlers put `.code()` on the wire.
pub use kafscale_codec::KafkaError;

pub const NONE: i16 = 0;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = K::UnknownTopicOrPartition.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = K::NotLeaderOrFollower.code();
pub const REQUEST_TIMED_OUT: i16 = K::RequestTimedOut.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = K::InvalidTopicException.code();
pub const TOPIC_ALREADY_EXISTS: i16 = K::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = K::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = K::InvalidReplicationFactor.code();
pub const INVALID_CONFIG: i16 = K::InvalidConfig.code();
pub const INVALID_REQUEST: i16 = K::InvalidRequest.code();
pub const KAFKA_STORAGE_ERROR: i16 = K::KafkaStorageError.code();
pub const INVALID_RECORD: i16 = K::InvalidRecord.code();
pub const CORRUPT_MESSAGE: i16 = K::CorruptMessage.code();
pub const MESSAGE_TOO_LARGE: i16 = K::MessageTooLarge.code();
pub const POLICY_VIOLATION: i16 = K::PolicyViolation.code();
pub const UNKNOWN_TOPIC_ID: i16 = K::UnknownTopicId.code();
pub const INVALID_REQUIRED_ACKS: i16 = K::InvalidRequiredAcks.code();
pub const INVALID_REPLICA_ASSIGNMENT: i16 = K::InvalidReplicaAssignment.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = K::UnknownLeaderEpoch.code();
pub const FENCED_LEADER_EPOCH: i16 = K::FencedLeaderEpoch.code();
pub const LEADER_NOT_AVAILABLE: i16 = K::LeaderNotAvailable.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = K::CoordinatorNotAvailable.code();

/// The error a producer gets for a batch we refuse.
pub fn batch_error(e: &kafscale_codec::batch::BatchError) -> KafkaError {
    use kafscale_codec::batch::BatchError as B;
    match e {
        B::UnsupportedMagic(_) => K::UnsupportedForMessageFormat,
        B::InconsistentCount { .. } => K::InvalidRecord,
        B::CrcMismatch { .. } | B::Truncated { .. } | B::BadLength(_) => K::CorruptMessage,
    }
}

/// The error for a message set of magic 0/1 that does not convert (produced),
/// or stored batches that do not convert for an old fetcher.
pub fn legacy_error(e: &kafscale_codec::legacy::LegacyError) -> i16 {
    use kafscale_codec::compression::CompressionError as C;
    use kafscale_codec::legacy::LegacyError as L;
    match e {
        L::Empty => INVALID_RECORD,
        L::Compression(C::Unsupported(_)) => K::UnsupportedCompressionType.code(),
        L::Compression(C::TooLarge(_)) => MESSAGE_TOO_LARGE,
        L::Truncated
        | L::CrcMismatch { .. }
        | L::BadMagic(_)
        | L::Nested
        | L::NullWrapper
        | L::BadBatch
        | L::Compression(C::Corrupt(_)) => CORRUPT_MESSAGE,
    }
}

/// The wire code of an outcome: 0 for success.
pub fn code_of<T>(r: &Result<T, KafkaError>) -> i16 {
    r.as_ref().err().map_or(NONE, |e| e.code())
}
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = K::TransactionalIdAuthorizationFailed.code();
pub const ILLEGAL_SASL_STATE: i16 = K::IllegalSaslState.code();
pub const UNSUPPORTED_SASL_MECHANISM: i16 = K::UnsupportedSaslMechanism.code();
pub const SASL_AUTHENTICATION_FAILED: i16 = K::SaslAuthenticationFailed.code();
pub const RESOURCE_NOT_FOUND: i16 = K::ResourceNotFound.code();
pub const DUPLICATE_RESOURCE: i16 = K::DuplicateResource.code();
pub const UNACCEPTABLE_CREDENTIAL: i16 = K::UnacceptableCredential.code();
pub const TOPIC_AUTHORIZATION_FAILED: i16 = K::TopicAuthorizationFailed.code();
pub const GROUP_AUTHORIZATION_FAILED: i16 = K::GroupAuthorizationFailed.code();
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = K::ClusterAuthorizationFailed.code();
pub const SECURITY_DISABLED: i16 = K::SecurityDisabled.code();
