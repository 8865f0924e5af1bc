//! Why a group request fails, typed inside the coordinator and turned into Kafka
//! error codes only when the response is built.

use kafscale_codec::KafkaError as K;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the group id is not valid for this request")]
    InvalidGroupId,
    #[error("the member is not part of the group")]
    UnknownMemberId,
    #[error("the request is for another generation of the group")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// Join again with this member id (KIP-394).
    #[error("a member id is required; rejoin with {0}")]
    MemberIdRequired(String),
    #[error("another member registered with the same group.instance.id")]
    FencedInstanceId,
    #[error("the session timeout is outside the broker's bounds")]
    InvalidSessionTimeout,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the group's coordinator cannot be reached")]
    CoordinatorNotAvailable,
    /// This broker stopped coordinating the group (it is shutting down).
    #[error("this broker no longer coordinates the group")]
    NotCoordinator,
    /// This broker just became the group's coordinator and is loading it.
    #[error("the coordinator is loading the group")]
    CoordinatorLoadInProgress,
    #[error("no such topic or partition")]
    UnknownTopicOrPartition,
    #[error("the offset metadata is too long")]
    OffsetMetadataTooLarge,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the group has active members")]
    NonEmptyGroup,
    #[error("the group's metadata could not be changed in the store")]
    Storage,
}

impl GroupError {
    pub fn code(&self) -> i16 {
        let k = match self {
            GroupError::InvalidGroupId => K::InvalidGroupId,
            GroupError::UnknownMemberId => K::UnknownMemberId,
            GroupError::IllegalGeneration => K::IllegalGeneration,
            GroupError::RebalanceInProgress => K::RebalanceInProgress,
            GroupError::MemberIdRequired(_) => K::MemberIdRequired,
            GroupError::FencedInstanceId => K::FencedInstanceId,
            GroupError::InvalidSessionTimeout => K::InvalidSessionTimeout,
            GroupError::InconsistentGroupProtocol => K::InconsistentGroupProtocol,
            GroupError::CoordinatorNotAvailable => K::CoordinatorNotAvailable,
            GroupError::NotCoordinator => K::NotCoordinator,
            GroupError::CoordinatorLoadInProgress => K::CoordinatorLoadInProgress,
            GroupError::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
            GroupError::OffsetMetadataTooLarge => K::OffsetMetadataTooLarge,
            GroupError::GroupIdNotFound => K::GroupIdNotFound,
            GroupError::NonEmptyGroup => K::NonEmptyGroup,
            GroupError::Storage => K::KafkaStorageError,
        };
        k.code()
    }
}

/// The code of a result: 0 on success.
pub fn code_of<T>(r: &Result<T, GroupError>) -> i16 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}
