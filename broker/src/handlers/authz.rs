//! Authorization of every request (`KAFSCALE_AUTHORIZER=acl`), at one place
//! around the handlers: `gate` takes out of a request what the principal may
//! not touch (or answers the whole request with the error), the handler runs
//! on the rest, and `finish` puts the refused parts back into its response
//! with Kafka's codes (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED,
//! CLUSTER_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED), hides
//! what the principal may not describe and fills in authorized operations.
//! The operation each API needs follows Kafka's `KafkaApis` (the table is in
//! docs/security.md). Without an authorizer neither runs: the connection
//! never builds a `Check`.

use std::collections::HashSet;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, TopicResponse};
use kafka_protocol::messages::describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::errors::{
    CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION,
};
use crate::security::acl::{Check, Operation as Op, ResourceType};
use crate::shard::Shard;

/// A refused topic: its name, id and partitions, and the code to answer.
type Refused = (TopicName, Uuid, Vec<i32>, i16);

/// What was taken out of a request, to answer in its response.
#[derive(Default)]
pub enum Pending {
    #[default]
    Nothing,
    /// Topics (with their partitions) refused, each with its code.
    Partitions(Vec<Refused>),
    /// Named resources refused (topics, groups), each with its code.
    Names(Vec<(StrBytes, i16)>),
    /// DeleteTopics: refused topics by name or id (a topic asked for by id whose
    /// name the principal may not describe is answered without its name).
    DeleteTopics(Vec<(Option<TopicName>, Uuid)>),
    /// Config resources refused: (resource type, name, code).
    Configs(Vec<(i8, StrBytes, i16)>),
    Metadata {
        /// The refused topics (None: every topic was asked for, the response
        /// keeps those the principal may describe).
        refused: Option<Vec<MetadataResponseTopic>>,
        /// v0 reads an empty list as "all topics": when every named topic was
        /// refused, the handler's answer is dropped.
        only_refused: bool,
        topic_operations: bool,
        cluster_operations: bool,
    },
    DescribeTopicPartitions(Vec<DescribeTopicPartitionsResponseTopic>),
    /// OffsetFetch: whether v0-7's topic list was explicit, and which v8 groups
    /// named their topics. Named topics the principal may not describe are
    /// answered with TOPIC_AUTHORIZATION_FAILED, the others are left out.
    OffsetFetch {
        explicit: bool,
        explicit_groups: HashSet<StrBytes>,
    },
    CreateTopics(Vec<(StrBytes, i16)>),
    /// ConsumerGroupDescribe: groups the principal may not describe.
    ConsumerGroupDescribe(Vec<GroupId>),
    DescribeGroups {
        operations: bool,
    },
    DescribeCluster {
        operations: bool,
    },
    /// FindCoordinator v4: the key type of its keys.
    Coordinators(i8),
    /// Responses filtered after the handler (coordinators, group lists, configs
    /// the principal may not describe).
    Filter,
}

impl Pending {
    /// Whether anything of the request was refused (acks=0 produce: Kafka
    /// closes the connection, as the client hears no error otherwise).
    pub fn refused_any(&self) -> bool {
        match self {
            Pending::Partitions(p) => !p.is_empty(),
            _ => false,
        }
    }
}

/// The request to handle and what was taken out of it, or the whole answer.
type Gate = Result<(RequestKind, Pending), Box<ResponseKind>>;

/// Whether the principal may create topic `name` (CREATE on the cluster or on it).
fn may_create(check: &Check, name: &str) -> bool {
    check.cluster(Op::Create) || check.topic(Op::Create, name)
}

/// Takes out of `items` those `refuse` gives a code for (in place: nothing is
/// allocated unless something is refused).
fn split<T>(items: &mut Vec<T>, mut refuse: impl FnMut(&T) -> Option<i16>) -> Vec<(T, i16)> {
    let mut codes = Vec::new();
    let refused: Vec<T> = items
        .extract_if(.., |item| match refuse(item) {
            Some(code) => {
                codes.push(code);
                true
            }
            None => false,
        })
        .collect();
    refused.into_iter().zip(codes).collect()
}

fn topic_code(check: &Check, op: Op, name: &str) -> Option<i16> {
    (!check.topic(op, name)).then_some(TOPIC_AUTHORIZATION_FAILED)
}

fn cluster_refused(check: &Check, op: Op) -> bool {
    !check.cluster(op)
}

pub fn gate(shard: &Shard, check: &Check, body: RequestKind, version: i16) -> Gate {
    let cluster = shard.cluster();
    let exists = |n: &str| cluster.topic(n).is_some();
    let name_of_id = |id: &Uuid| cluster.by_id.get(id).map(|m| m.name.clone());
    let auto = shard.settings.auto_create_topics;
    Ok(match body {
        RequestKind::ApiVersions(_)
        | RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_) => (body, Pending::Nothing),
        RequestKind::Produce(mut r) => {
            if let Some(id) = &r.transactional_id {
                // A transactional producer needs WRITE on its transactional id.
                if !check.transactional_id(Op::Write, id) {
                    let refused = r
                        .topic_data
                        .drain(..)
                        .map(|t| {
                            let parts = t.partition_data.iter().map(|p| p.index).collect();
                            (
                                t.name,
                                t.topic_id,
                                parts,
                                TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                            )
                        })
                        .collect();
                    return Ok((RequestKind::Produce(r), Pending::Partitions(refused)));
                }
            }
            let refused = split(&mut r.topic_data, |t| {
                let name = match (t.name.is_empty(), name_of_id(&t.topic_id)) {
                    (true, Some(n)) => n,
                    _ => t.name.to_string(),
                };
                if !check.topic(Op::Write, &name) {
                    Some(TOPIC_AUTHORIZATION_FAILED)
                } else if auto && !exists(&name) && !may_create(check, &name) {
                    // Kafka never creates a topic on produce; this broker does
                    // when auto-creation is on, so creation is checked as well.
                    Some(UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    None
                }
            });
            let refused = refused
                .into_iter()
                .map(|(t, code)| {
                    let parts = t.partition_data.iter().map(|p| p.index).collect();
                    (t.name, t.topic_id, parts, code)
                })
                .collect();
            (RequestKind::Produce(r), Pending::Partitions(refused))
        }
        RequestKind::Fetch(mut r) => {
            // A fetch from a replica needs CLUSTER_ACTION; Kafscale has none,
            // but the check keeps a forged replica id from reading anything.
            let from_replica = r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0;
            let replica_ok = !from_replica || check.cluster(Op::ClusterAction);
            let refused = split(&mut r.topics, |t| {
                let name = if version >= 13 {
                    match name_of_id(&t.topic_id) {
                        Some(n) => n,
                        // The handler answers UNKNOWN_TOPIC_ID.
                        None => return None,
                    }
                } else {
                    t.topic.to_string()
                };
                if !replica_ok {
                    return Some(TOPIC_AUTHORIZATION_FAILED);
                }
                topic_code(check, Op::Read, &name)
            });
            let refused = refused
                .into_iter()
                .map(|(t, code)| {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    (t.topic, t.topic_id, parts, code)
                })
                .collect();
            (RequestKind::Fetch(r), Pending::Partitions(refused))
        }
        RequestKind::ListOffsets(mut r) => {
            let refused = split(&mut r.topics, |t| topic_code(check, Op::Describe, &t.name))
                .into_iter()
                .map(|(t, code)| {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    (t.name, Uuid::nil(), parts, code)
                })
                .collect();
            (RequestKind::ListOffsets(r), Pending::Partitions(refused))
        }
        RequestKind::OffsetForLeaderEpoch(mut r) => {
            let replica_ok = r.replica_id.0 < 0 || check.cluster(Op::ClusterAction);
            let refused = split(&mut r.topics, |t| {
                if !replica_ok {
                    return Some(TOPIC_AUTHORIZATION_FAILED);
                }
                topic_code(check, Op::Describe, &t.topic)
            })
            .into_iter()
            .map(|(t, code)| {
                let parts = t.partitions.iter().map(|p| p.partition).collect();
                (t.topic, Uuid::nil(), parts, code)
            })
            .collect();
            (
                RequestKind::OffsetForLeaderEpoch(r),
                Pending::Partitions(refused),
            )
        }
        RequestKind::Metadata(mut r) => {
            let topic_operations = r.include_topic_authorized_operations;
            let cluster_operations = r.include_cluster_authorized_operations;
            let allow_auto = version < 4 || r.allow_auto_topic_creation;
            match r.topics.as_mut() {
                Some(topics) if !(version == 0 && topics.is_empty()) => {
                    let refused = split(topics, |t| {
                        let name = match (&t.name, name_of_id(&t.topic_id)) {
                            (Some(n), _) => n.to_string(),
                            (None, Some(n)) => n,
                            (None, None) => return None,
                        };
                        if !check.topic(Op::Describe, &name) {
                            Some(TOPIC_AUTHORIZATION_FAILED)
                        } else if allow_auto && auto && !exists(&name) && !may_create(check, &name)
                        {
                            // Kafka: auto-creation needs CREATE.
                            Some(TOPIC_AUTHORIZATION_FAILED)
                        } else {
                            None
                        }
                    });
                    let only_refused = version == 0 && topics.is_empty();
                    let refused = refused
                        .into_iter()
                        .map(|(t, code)| {
                            let mut out = MetadataResponseTopic::default();
                            out.error_code = code;
                            out.name = t.name;
                            // As Kafka: the id of a topic one may not see is not told.
                            out.topic_id = Uuid::nil();
                            out
                        })
                        .collect();
                    let pending = Pending::Metadata {
                        refused: Some(refused),
                        only_refused,
                        topic_operations,
                        cluster_operations,
                    };
                    (RequestKind::Metadata(r), pending)
                }
                _ => {
                    let pending = Pending::Metadata {
                        refused: None,
                        only_refused: false,
                        topic_operations,
                        cluster_operations,
                    };
                    (RequestKind::Metadata(r), pending)
                }
            }
        }
        RequestKind::DescribeTopicPartitions(mut r) => {
            if r.topics.is_empty() {
                (RequestKind::DescribeTopicPartitions(r), Pending::Filter)
            } else {
                let refused: Vec<_> =
                    split(&mut r.topics, |t| topic_code(check, Op::Describe, &t.name))
                        .into_iter()
                        .map(|(t, code)| {
                            let mut out = DescribeTopicPartitionsResponseTopic::default();
                            out.error_code = code;
                            out.name = Some(t.name);
                            out.topic_id = Uuid::nil();
                            out
                        })
                        .collect();
                if r.topics.is_empty() {
                    // An empty list would ask for every topic.
                    let mut resp = DescribeTopicPartitionsResponse::default();
                    resp.topics = refused;
                    resp.next_cursor = None;
                    return Err(Box::new(ResponseKind::DescribeTopicPartitions(resp)));
                }
                (
                    RequestKind::DescribeTopicPartitions(r),
                    Pending::DescribeTopicPartitions(refused),
                )
            }
        }
        RequestKind::InitProducerId(ref r) => {
            let code = match &r.transactional_id {
                Some(id) if !check.transactional_id(Op::Write, id) => {
                    Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                }
                Some(_) => None,
                // KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
                None if check.cluster(Op::IdempotentWrite)
                    || check.any_resource(Op::Write, ResourceType::Topic) =>
                {
                    None
                }
                None => Some(CLUSTER_AUTHORIZATION_FAILED),
            };
            if let Some(code) = code {
                let mut resp = InitProducerIdResponse::default();
                resp.error_code = code;
                resp.producer_id = ProducerId(-1);
                resp.producer_epoch = -1;
                return Err(Box::new(ResponseKind::InitProducerId(resp)));
            }
            (body, Pending::Nothing)
        }
        RequestKind::FindCoordinator(ref r) => {
            if version < 4 {
                if let Some(code) = coordinator_refused(check, r.key_type, &r.key) {
                    let mut resp = FindCoordinatorResponse::default();
                    resp.error_code = code;
                    resp.node_id = BrokerId(-1);
                    resp.port = -1;
                    return Err(Box::new(ResponseKind::FindCoordinator(resp)));
                }
            }
            let key_type = r.key_type;
            (body, Pending::Coordinators(key_type))
        }
        RequestKind::JoinGroup(ref r) if !check.group(Op::Read, &r.group_id) => {
            let mut resp = JoinGroupResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            resp.generation_id = -1;
            resp.member_id = r.member_id.clone();
            return Err(Box::new(ResponseKind::JoinGroup(resp)));
        }
        RequestKind::SyncGroup(ref r) if !check.group(Op::Read, &r.group_id) => {
            let mut resp = SyncGroupResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::SyncGroup(resp)));
        }
        RequestKind::Heartbeat(ref r) if !check.group(Op::Read, &r.group_id) => {
            let mut resp = HeartbeatResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::Heartbeat(resp)));
        }
        RequestKind::ConsumerGroupHeartbeat(ref r) if !check.group(Op::Read, &r.group_id) => {
            let mut resp = ConsumerGroupHeartbeatResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::ConsumerGroupHeartbeat(resp)));
        }
        RequestKind::ConsumerGroupDescribe(ref r)
            if r.group_ids.iter().any(|g| !check.group(Op::Describe, g)) =>
        {
            // Each group the principal may not describe answers
            // GROUP_AUTHORIZATION_FAILED; the others are described as usual.
            let (mut allowed, mut refused) = (r.clone(), Vec::new());
            allowed.group_ids.retain(|g| {
                let ok = check.group(Op::Describe, g);
                if !ok {
                    refused.push(g.clone());
                }
                ok
            });
            (
                RequestKind::ConsumerGroupDescribe(allowed),
                Pending::ConsumerGroupDescribe(refused),
            )
        }
        RequestKind::LeaveGroup(ref r) if !check.group(Op::Read, &r.group_id) => {
            let mut resp = LeaveGroupResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::LeaveGroup(resp)));
        }
        RequestKind::OffsetCommit(mut r) => {
            let group_ok = check.group(Op::Read, &r.group_id);
            let refused: Vec<Refused> = split(&mut r.topics, |t| {
                if !group_ok {
                    Some(GROUP_AUTHORIZATION_FAILED)
                } else {
                    topic_code(check, Op::Read, &t.name)
                }
            })
            .into_iter()
            .map(|(t, code)| {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                (t.name, t.topic_id, parts, code)
            })
            .collect();
            if !group_ok {
                let mut resp = OffsetCommitResponse::default();
                resp.topics = refused.into_iter().map(commit_topic).collect();
                return Err(Box::new(ResponseKind::OffsetCommit(resp)));
            }
            (RequestKind::OffsetCommit(r), Pending::Partitions(refused))
        }
        RequestKind::OffsetFetch(ref r) => {
            if version < 8 && !check.group(Op::Describe, &r.group_id) {
                let mut resp = OffsetFetchResponse::default();
                resp.error_code = GROUP_AUTHORIZATION_FAILED;
                return Err(Box::new(ResponseKind::OffsetFetch(resp)));
            }
            let explicit = r.topics.is_some();
            let explicit_groups = r
                .groups
                .iter()
                .filter(|g| g.topics.is_some())
                .map(|g| g.group_id.0.clone())
                .collect();
            let pending = Pending::OffsetFetch {
                explicit,
                explicit_groups,
            };
            (body, pending)
        }
        RequestKind::OffsetDelete(mut r) => {
            if !check.group(Op::Delete, &r.group_id) {
                let mut resp = OffsetDeleteResponse::default();
                resp.error_code = GROUP_AUTHORIZATION_FAILED;
                return Err(Box::new(ResponseKind::OffsetDelete(resp)));
            }
            let refused = split(&mut r.topics, |t| topic_code(check, Op::Read, &t.name))
                .into_iter()
                .map(|(t, code)| {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    (t.name, Uuid::nil(), parts, code)
                })
                .collect();
            (RequestKind::OffsetDelete(r), Pending::Partitions(refused))
        }
        RequestKind::DescribeGroups(ref r) => {
            let operations = r.include_authorized_operations;
            (body, Pending::DescribeGroups { operations })
        }
        RequestKind::ListGroups(_) => (body, Pending::Filter),
        RequestKind::DeleteGroups(mut r) => {
            let refused = split(&mut r.groups_names, |g| {
                (!check.group(Op::Delete, g)).then_some(GROUP_AUTHORIZATION_FAILED)
            })
            .into_iter()
            .map(|(g, code)| (g.0, code))
            .collect();
            (RequestKind::DeleteGroups(r), Pending::Names(refused))
        }
        RequestKind::CreateTopics(mut r) => {
            let refused = split(&mut r.topics, |t| {
                (!may_create(check, &t.name)).then_some(TOPIC_AUTHORIZATION_FAILED)
            })
            .into_iter()
            .map(|(t, code)| (t.name.0, code))
            .collect();
            (RequestKind::CreateTopics(r), Pending::CreateTopics(refused))
        }
        RequestKind::DeleteTopics(mut r) => {
            let mut refused = Vec::new();
            for (n, _) in split(&mut r.topic_names, |n| topic_code(check, Op::Delete, n)) {
                refused.push((Some(n), Uuid::nil()));
            }
            for (t, _) in split(&mut r.topics, |t| {
                let name = match (&t.name, name_of_id(&t.topic_id)) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(n)) => n,
                    // The handler answers UNKNOWN_TOPIC_ID.
                    (None, None) => return None,
                };
                topic_code(check, Op::Delete, &name)
            }) {
                let name = match (&t.name, name_of_id(&t.topic_id)) {
                    (Some(n), _) => Some(n.clone()),
                    (None, Some(n)) if check.topic(Op::Describe, &n) => {
                        Some(TopicName(StrBytes::from_string(n)))
                    }
                    _ => None,
                };
                refused.push((name, t.topic_id));
            }
            (RequestKind::DeleteTopics(r), Pending::DeleteTopics(refused))
        }
        RequestKind::CreatePartitions(mut r) => {
            let refused = split(&mut r.topics, |t| topic_code(check, Op::Alter, &t.name))
                .into_iter()
                .map(|(t, code)| (t.name.0, code))
                .collect();
            (RequestKind::CreatePartitions(r), Pending::Names(refused))
        }
        RequestKind::DeleteRecords(mut r) => {
            let refused = split(&mut r.topics, |t| topic_code(check, Op::Delete, &t.name))
                .into_iter()
                .map(|(t, code)| {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    (t.name, Uuid::nil(), parts, code)
                })
                .collect();
            (RequestKind::DeleteRecords(r), Pending::Partitions(refused))
        }
        RequestKind::DescribeProducers(mut r) => {
            let refused = split(&mut r.topics, |t| topic_code(check, Op::Read, &t.name))
                .into_iter()
                .map(|(t, code)| (t.name, Uuid::nil(), t.partition_indexes, code))
                .collect();
            (
                RequestKind::DescribeProducers(r),
                Pending::Partitions(refused),
            )
        }
        RequestKind::DescribeConfigs(_) => (body, Pending::Filter),
        RequestKind::AlterConfigs(mut r) => {
            let refused = split(&mut r.resources, |c| {
                config_refused(check, c.resource_type, &c.resource_name, Op::AlterConfigs)
            })
            .into_iter()
            .map(|(c, code)| (c.resource_type, c.resource_name, code))
            .collect();
            (RequestKind::AlterConfigs(r), Pending::Configs(refused))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let refused = split(&mut r.resources, |c| {
                config_refused(check, c.resource_type, &c.resource_name, Op::AlterConfigs)
            })
            .into_iter()
            .map(|(c, code)| (c.resource_type, c.resource_name, code))
            .collect();
            (
                RequestKind::IncrementalAlterConfigs(r),
                Pending::Configs(refused),
            )
        }
        RequestKind::DescribeCluster(ref r) => {
            let operations = r.include_cluster_authorized_operations;
            (body, Pending::DescribeCluster { operations })
        }
        RequestKind::DescribeLogDirs(_) if cluster_refused(check, Op::Describe) => {
            let mut resp = DescribeLogDirsResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::DescribeLogDirs(resp)));
        }
        RequestKind::ListPartitionReassignments(_) if cluster_refused(check, Op::Describe) => {
            let mut resp = ListPartitionReassignmentsResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            resp.error_message = Some(StrBytes::from_static_str("Cluster authorization failed"));
            return Err(Box::new(ResponseKind::ListPartitionReassignments(resp)));
        }
        RequestKind::ElectLeaders(ref r) if cluster_refused(check, Op::Alter) => {
            let mut resp = ElectLeadersResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            resp.replica_election_results = r
                .topic_partitions
                .iter()
                .flatten()
                .map(|t| {
                    let mut out = ReplicaElectionResult::default();
                    out.topic = t.topic.clone();
                    out.partition_result = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut x = PartitionResult::default();
                            x.partition_id = *p;
                            x.error_code = CLUSTER_AUTHORIZATION_FAILED;
                            x
                        })
                        .collect();
                    out
                })
                .collect();
            return Err(Box::new(ResponseKind::ElectLeaders(resp)));
        }
        RequestKind::DescribeUserScramCredentials(_) if cluster_refused(check, Op::Describe) => {
            let mut resp = DescribeUserScramCredentialsResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            return Err(Box::new(ResponseKind::DescribeUserScramCredentials(resp)));
        }
        RequestKind::AlterUserScramCredentials(ref r) if cluster_refused(check, Op::Alter) => {
            let mut resp = AlterUserScramCredentialsResponse::default();
            let mut seen = HashSet::new();
            resp.results = r
                .deletions
                .iter()
                .map(|d| d.name.clone())
                .chain(r.upsertions.iter().map(|u| u.name.clone()))
                .filter(|n| seen.insert(n.clone()))
                .map(|user| {
                    let mut x = alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
                    x.user = user;
                    x.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    x
                })
                .collect();
            return Err(Box::new(ResponseKind::AlterUserScramCredentials(resp)));
        }
        RequestKind::DescribeAcls(_) if cluster_refused(check, Op::Describe) => {
            let mut resp = DescribeAclsResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            resp.error_message = Some(StrBytes::from_static_str("Cluster authorization failed"));
            return Err(Box::new(ResponseKind::DescribeAcls(resp)));
        }
        RequestKind::CreateAcls(ref r) if cluster_refused(check, Op::Alter) => {
            let mut resp = CreateAclsResponse::default();
            resp.results = r
                .creations
                .iter()
                .map(|_| {
                    let mut x = create_acls_response::AclCreationResult::default();
                    x.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    x
                })
                .collect();
            return Err(Box::new(ResponseKind::CreateAcls(resp)));
        }
        RequestKind::DeleteAcls(ref r) if cluster_refused(check, Op::Alter) => {
            let mut resp = DeleteAclsResponse::default();
            resp.filter_results = r
                .filters
                .iter()
                .map(|_| {
                    let mut x = delete_acls_response::DeleteAclsFilterResult::default();
                    x.error_code = CLUSTER_AUTHORIZATION_FAILED;
                    x
                })
                .collect();
            return Err(Box::new(ResponseKind::DeleteAcls(resp)));
        }
        other => (other, Pending::Nothing),
    })
}

/// The code for a coordinator lookup the principal may not make (None: allowed):
/// DESCRIBE on the group (key type 0) or the transactional id (1).
fn coordinator_refused(check: &Check, key_type: i8, key: &str) -> Option<i16> {
    match key_type {
        0 if !check.group(Op::Describe, key) => Some(GROUP_AUTHORIZATION_FAILED),
        1 if !check.transactional_id(Op::Describe, key) => {
            Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        }
        _ => None,
    }
}

/// The code for a config resource the principal may not `op` (None: allowed).
fn config_refused(check: &Check, resource_type: i8, name: &str, op: Op) -> Option<i16> {
    const TOPIC: i8 = 2;
    match resource_type {
        TOPIC => topic_code(check, op, name),
        // Brokers and broker loggers: the cluster resource.
        _ if !check.cluster(op) => Some(CLUSTER_AUTHORIZATION_FAILED),
        _ => None,
    }
}

fn commit_topic((name, id, parts, code): Refused) -> OffsetCommitResponseTopic {
    let mut t = OffsetCommitResponseTopic::default();
    t.name = name;
    t.topic_id = id;
    t.partitions = refused_partitions(parts, |x: &mut OffsetCommitResponsePartition, p| {
        x.partition_index = p;
        x.error_code = code;
    });
    t
}

/// One refused partition of each index in `parts`, filled in by `set`.
fn refused_partitions<P: Default>(parts: Vec<i32>, set: impl Fn(&mut P, i32)) -> Vec<P> {
    parts
        .into_iter()
        .map(|p| {
            let mut x = P::default();
            set(&mut x, p);
            x
        })
        .collect()
}

/// Adds the refused topics' partitions to a response, each with its code.
fn add_partitions(resp: &mut ResponseKind, refused: Vec<Refused>) {
    for (name, id, parts, code) in refused {
        match resp {
            ResponseKind::Produce(r) => {
                let mut t = TopicProduceResponse::default();
                t.name = name;
                t.topic_id = id;
                t.partition_responses =
                    refused_partitions(parts, |x: &mut PartitionProduceResponse, p| {
                        x.index = p;
                        x.error_code = code;
                        x.base_offset = -1;
                        x.log_append_time_ms = -1;
                        x.log_start_offset = -1;
                    });
                r.responses.push(t);
            }
            ResponseKind::Fetch(r) => {
                let mut t = FetchableTopicResponse::default();
                t.topic = name;
                t.topic_id = id;
                t.partitions = refused_partitions(parts, |x: &mut PartitionData, p| {
                    x.partition_index = p;
                    x.error_code = code;
                    x.high_watermark = -1;
                    x.last_stable_offset = -1;
                    x.log_start_offset = -1;
                });
                r.responses.push(t);
            }
            ResponseKind::ListOffsets(r) => {
                let mut t = ListOffsetsTopicResponse::default();
                t.name = name;
                t.partitions =
                    refused_partitions(parts, |x: &mut ListOffsetsPartitionResponse, p| {
                        x.partition_index = p;
                        x.error_code = code;
                        x.timestamp = -1;
                        x.offset = -1;
                        x.leader_epoch = -1;
                    });
                r.topics.push(t);
            }
            ResponseKind::OffsetForLeaderEpoch(r) => {
                let mut t = OffsetForLeaderTopicResult::default();
                t.topic = name;
                t.partitions = refused_partitions(parts, |x: &mut EpochEndOffset, p| {
                    x.partition = p;
                    x.error_code = code;
                    x.leader_epoch = -1;
                    x.end_offset = -1;
                });
                r.topics.push(t);
            }
            ResponseKind::OffsetCommit(r) => r.topics.push(commit_topic((name, id, parts, code))),
            ResponseKind::OffsetDelete(r) => {
                let mut t = OffsetDeleteResponseTopic::default();
                t.name = name;
                t.partitions =
                    refused_partitions(parts, |x: &mut OffsetDeleteResponsePartition, p| {
                        x.partition_index = p;
                        x.error_code = code;
                    });
                r.topics.push(t);
            }
            ResponseKind::DeleteRecords(r) => {
                let mut t = DeleteRecordsTopicResult::default();
                t.name = name;
                t.partitions =
                    refused_partitions(parts, |x: &mut DeleteRecordsPartitionResult, p| {
                        x.partition_index = p;
                        x.error_code = code;
                        x.low_watermark = -1;
                    });
                r.topics.push(t);
            }
            ResponseKind::DescribeProducers(r) => {
                let mut t = TopicResponse::default();
                t.name = name;
                t.partitions = refused_partitions(parts, |x: &mut PartitionResponse, p| {
                    x.partition_index = p;
                    x.error_code = code;
                });
                r.topics.push(t);
            }
            _ => {}
        }
    }
}

fn add_names(resp: &mut ResponseKind, refused: Vec<(StrBytes, i16)>) {
    for (name, code) in refused {
        match resp {
            ResponseKind::CreatePartitions(r) => {
                let mut t = CreatePartitionsTopicResult::default();
                t.name = TopicName(name);
                t.error_code = code;
                r.results.push(t);
            }
            ResponseKind::DeleteGroups(r) => {
                let mut g = DeletableGroupResult::default();
                g.group_id = GroupId(name);
                g.error_code = code;
                r.results.push(g);
            }
            _ => {}
        }
    }
}

fn add_configs(resp: &mut ResponseKind, refused: Vec<(i8, StrBytes, i16)>) {
    for (rt, name, code) in refused {
        let msg = Some(StrBytes::from_static_str("Authorization failed"));
        match resp {
            ResponseKind::AlterConfigs(r) => {
                let mut x = alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = rt;
                x.resource_name = name;
                x.error_code = code;
                x.error_message = msg;
                r.responses.push(x);
            }
            ResponseKind::IncrementalAlterConfigs(r) => {
                let mut x =
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                x.resource_type = rt;
                x.resource_name = name;
                x.error_code = code;
                x.error_message = msg;
                r.responses.push(x);
            }
            _ => {}
        }
    }
}

pub fn finish(check: &Check, resp: &mut ResponseKind, pending: Pending) {
    match (pending, resp) {
        (Pending::Nothing, _) => {}
        (Pending::Partitions(refused), resp) => add_partitions(resp, refused),
        (Pending::Names(refused), resp) => add_names(resp, refused),
        (Pending::Configs(refused), resp) => add_configs(resp, refused),
        (Pending::ConsumerGroupDescribe(refused), ResponseKind::ConsumerGroupDescribe(r)) => {
            for g in refused {
                let mut d = consumer_group_describe_response::DescribedGroup::default();
                d.group_id = g;
                d.error_code = GROUP_AUTHORIZATION_FAILED;
                r.groups.push(d);
            }
        }
        (Pending::CreateTopics(refused), ResponseKind::CreateTopics(r)) => {
            // Created topics: their configs only with DESCRIBE_CONFIGS.
            for t in r.topics.iter_mut() {
                if t.error_code == 0 && !check.topic(Op::DescribeConfigs, &t.name) {
                    t.configs = Some(Vec::new());
                    t.topic_config_error_code = TOPIC_AUTHORIZATION_FAILED;
                }
            }
            for (name, code) in refused {
                let mut t = CreatableTopicResult::default();
                t.name = TopicName(name);
                t.error_code = code;
                t.num_partitions = -1;
                t.replication_factor = -1;
                r.topics.push(t);
            }
        }
        (Pending::DeleteTopics(refused), ResponseKind::DeleteTopics(r)) => {
            for (name, id) in refused {
                let mut t = DeletableTopicResult::default();
                t.name = name;
                t.topic_id = id;
                t.error_code = TOPIC_AUTHORIZATION_FAILED;
                r.responses.push(t);
            }
        }
        (
            Pending::Metadata {
                refused,
                only_refused,
                topic_operations,
                cluster_operations,
            },
            ResponseKind::Metadata(r),
        ) => {
            match refused {
                // Every topic asked for: only those the principal may describe.
                None => r.topics.retain(|t| {
                    t.name
                        .as_ref()
                        .is_some_and(|n| check.topic(Op::Describe, n))
                }),
                Some(refused) => {
                    if only_refused {
                        r.topics.clear();
                    }
                    r.topics.extend(refused);
                }
            }
            if topic_operations {
                for t in r.topics.iter_mut().filter(|t| t.error_code == 0) {
                    if let Some(n) = &t.name {
                        t.topic_authorized_operations = check.operations(ResourceType::Topic, n);
                    }
                }
            }
            if cluster_operations {
                r.cluster_authorized_operations = cluster_operations_of(check);
            }
        }
        (Pending::DescribeTopicPartitions(refused), ResponseKind::DescribeTopicPartitions(r)) => {
            topic_partitions_operations(check, r);
            r.topics.extend(refused);
        }
        (
            Pending::OffsetFetch {
                explicit,
                explicit_groups,
            },
            ResponseKind::OffsetFetch(r),
        ) => offset_fetch(check, r, explicit, &explicit_groups),
        (Pending::DescribeGroups { operations }, ResponseKind::DescribeGroups(r)) => {
            for g in r.groups.iter_mut() {
                if !check.group(Op::Describe, &g.group_id) {
                    let id = g.group_id.clone();
                    *g = Default::default();
                    g.group_id = id;
                    g.error_code = GROUP_AUTHORIZATION_FAILED;
                } else if operations {
                    g.authorized_operations = check.operations(ResourceType::Group, &g.group_id);
                }
            }
        }
        (Pending::DescribeCluster { operations: true }, ResponseKind::DescribeCluster(r)) => {
            r.cluster_authorized_operations = cluster_operations_of(check);
        }
        (Pending::Coordinators(key_type), ResponseKind::FindCoordinator(r)) => {
            // v4: one answer per key (v0-3 were refused before the handler).
            for c in r.coordinators.iter_mut() {
                if let Some(code) = coordinator_refused(check, key_type, &c.key) {
                    c.error_code = code;
                    c.error_message = None;
                    c.node_id = BrokerId(-1);
                    c.host = StrBytes::default();
                    c.port = -1;
                }
            }
        }
        (Pending::Filter, resp) => filter(check, resp),
        _ => {}
    }
}

/// Kafka: the cluster's operations only for who may describe it, else none.
fn cluster_operations_of(check: &Check) -> i32 {
    if check.cluster(Op::Describe) {
        check.operations(ResourceType::Cluster, crate::security::acl::CLUSTER)
    } else {
        0
    }
}

fn topic_partitions_operations(check: &Check, r: &mut DescribeTopicPartitionsResponse) {
    for t in r.topics.iter_mut().filter(|t| t.error_code == 0) {
        if let Some(n) = &t.name {
            t.topic_authorized_operations = check.operations(ResourceType::Topic, n);
        }
    }
}

/// Answers fetched offsets with TOPIC_AUTHORIZATION_FAILED (v0-7 and v8 have
/// two generated partition types with the same fields).
macro_rules! refuse_offsets {
    ($partitions:expr) => {
        for p in $partitions.iter_mut() {
            p.committed_offset = -1;
            p.committed_leader_epoch = -1;
            p.metadata = Some(StrBytes::default());
            p.error_code = TOPIC_AUTHORIZATION_FAILED;
        }
    };
}

/// OffsetFetch: groups the principal may not describe get the group error;
/// topics it may not describe are refused when named, left out otherwise.
fn offset_fetch(
    check: &Check,
    r: &mut OffsetFetchResponse,
    explicit: bool,
    explicit_groups: &HashSet<StrBytes>,
) {
    for g in r.groups.iter_mut() {
        if !check.group(Op::Describe, &g.group_id) {
            g.topics.clear();
            g.error_code = GROUP_AUTHORIZATION_FAILED;
        } else if explicit_groups.contains(&g.group_id.0) {
            for t in g.topics.iter_mut() {
                if !check.topic(Op::Describe, &t.name) {
                    refuse_offsets!(t.partitions);
                }
            }
        } else {
            g.topics.retain(|t| check.topic(Op::Describe, &t.name));
        }
    }
    if explicit {
        for t in r.topics.iter_mut() {
            if !check.topic(Op::Describe, &t.name) {
                refuse_offsets!(t.partitions);
            }
        }
    } else {
        r.topics.retain(|t| check.topic(Op::Describe, &t.name));
    }
}

/// Hides or refuses, in a handler's response, what the principal may not describe.
fn filter(check: &Check, resp: &mut ResponseKind) {
    match resp {
        // Who may describe the cluster sees every group.
        ResponseKind::ListGroups(r) if !check.cluster(Op::Describe) => {
            r.groups.retain(|g| check.group(Op::Describe, &g.group_id));
        }
        ResponseKind::DescribeConfigs(r) => {
            for c in r.results.iter_mut() {
                if let Some(code) = config_refused(
                    check,
                    c.resource_type,
                    &c.resource_name,
                    Op::DescribeConfigs,
                ) {
                    c.error_code = code;
                    c.error_message = Some(StrBytes::from_static_str("Authorization failed"));
                    c.configs.clear();
                }
            }
        }
        ResponseKind::DescribeTopicPartitions(r) => {
            // Every topic asked for: only those the principal may describe.
            r.topics.retain(|t| {
                t.name
                    .as_ref()
                    .is_some_and(|n| check.topic(Op::Describe, n))
            });
            topic_partitions_operations(check, r);
        }
        _ => {}
    }
}
