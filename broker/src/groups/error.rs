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
    /// Consumer protocol: the member's epoch is ahead of, or too far behind,
    /// the coordinator's; it must drop its partitions and rejoin with epoch 0.
    #[error("the member epoch is fenced by the group coordinator")]
    FencedMemberEpoch,
    /// Consumer protocol: an offset request carried an older member epoch.
    #[error("the member epoch is stale")]
    StaleMemberEpoch,
    #[error("the instance id is still used by another member of the group")]
    UnreleasedInstanceId,
    #[error("the assignor {0:?} is not supported (uniform, range)")]
    UnsupportedAssignor(String),
    #[error("the regular expression is not valid: {0}")]
    InvalidRegularExpression(String),
    #[error("{0}")]
    InvalidRequest(String),
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
            GroupError::FencedMemberEpoch => K::FencedMemberEpoch,
            GroupError::StaleMemberEpoch => K::StaleMemberEpoch,
            GroupError::UnreleasedInstanceId => K::UnreleasedInstanceId,
            GroupError::UnsupportedAssignor(_) => K::UnsupportedAssignor,
            GroupError::InvalidRegularExpression(_) => K::InvalidRegularExpression,
            GroupError::InvalidRequest(_) => K::InvalidRequest,
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
