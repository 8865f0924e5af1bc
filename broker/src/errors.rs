//! Kafka error codes the broker answers with, named once. Internal errors are
//! typed in their crates; this is where they become numbers on the wire.

use kafscale_codec::KafkaError as K;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = K::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = K::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = K::UnknownTopicOrPartition.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = K::NotLeaderOrFollower.code();
pub const REQUEST_TIMED_OUT: i16 = K::RequestTimedOut.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = K::InvalidTopicException.code();
pub const TOPIC_ALREADY_EXISTS: i16 = K::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = K::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = K::InvalidReplicationFactor.code();
pub const INVALID_CONFIG: i16 = K::InvalidConfig.code();
pub const INVALID_REQUEST: i16 = K::InvalidRequest.code();
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = K::UnsupportedForMessageFormat.code();
pub const KAFKA_STORAGE_ERROR: i16 = K::KafkaStorageError.code();
pub const INVALID_RECORD: i16 = K::InvalidRecord.code();
pub const UNKNOWN_TOPIC_ID: i16 = K::UnknownTopicId.code();
pub const INVALID_REQUIRED_ACKS: i16 = K::InvalidRequiredAcks.code();
pub const INVALID_REPLICA_ASSIGNMENT: i16 = K::InvalidReplicaAssignment.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = K::UnknownLeaderEpoch.code();

/// The code a producer gets for a batch we refuse.
pub fn batch_error_code(e: &kafscale_codec::batch::BatchError) -> i16 {
    use kafscale_codec::batch::BatchError as B;
    match e {
        B::UnsupportedMagic(_) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
        B::InconsistentCount { .. } => INVALID_RECORD,
        B::CrcMismatch { .. } | B::Truncated { .. } | B::BadLength(_) => CORRUPT_MESSAGE,
    }
}
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = K::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = K::InvalidProducerEpoch.code();
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = K::TransactionalIdAuthorizationFailed.code();
