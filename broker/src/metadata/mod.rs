//! Cluster metadata: topics, their ids, partition counts and configs; consumer
//! groups and their committed offsets.
//!
//! `MetadataStore` is the durable home of that state; `Cluster` is the immutable
//! snapshot each shard reads without locks (swapped as a whole on change).

pub mod assign;
mod controller;
pub mod embedded;
pub mod etcd;
mod mirror;
/// The etcd key layout lives beside the value schemas, so the operator writes the
/// same keys the brokers read.
pub use kafscale_proto::keys;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// DeleteTopics has begun and not finished: served by no broker, owned by
    /// none, and its name is taken until its objects are gone (docs/cluster.md).
    #[serde(default)]
    pub deleting: bool,
}

/// Defaults of the topic configs a topic does not set (the shared table of topic
/// configs): Kafscale keeps data until told otherwise (unlike Kafka's 7-day
/// default), and segments roll at the broker's `KAFSCALE_SEGMENT_BYTES`.
pub use kafscale_proto::topic_config::{
    DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_MS, DEFAULT_SEGMENT_MS,
};

/// Kafka's default delete.retention.ms (one day).
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 86_400_000;

/// A topic's configs as the owning shards apply them, parsed once per snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// -1: no time limit.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    pub segment_bytes: usize,
    /// Age at which the active segment rolls on the next append.
    pub segment_ms: i64,
    /// The topic's max.message.bytes; None: the broker's.
    pub max_message_bytes: Option<usize>,
    /// message.timestamp.type=LogAppendTime: the broker stamps every batch.
    pub log_append_time: bool,
    /// cleanup.policy lists `delete`: retention deletes segments. (A `compact`
    /// only topic keeps every segment, whatever its retention settings.)
    pub delete_policy: bool,
    /// cleanup.policy lists `compact`: the log cleaner keeps the newest record per key.
    pub compact: bool,
    /// How long a tombstone stays after the cleaning that first kept it.
    pub delete_retention_ms: i64,
    /// Records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// A record is cleaned at the latest this long after it was written,
    /// whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// min.cleanable.dirty.ratio in parts per million (Eq-friendly).
    pub min_cleanable_ratio_ppm: u32,
}

impl TopicSettings {
    pub fn has_retention(&self) -> bool {
        self.delete_policy && (self.retention_ms >= 0 || self.retention_bytes >= 0)
    }
}

impl TopicMeta {
    /// The effective settings: the topic's own configs over the broker defaults.
    /// Stored values were validated when they were set; anything unparsable
    /// (a hand-edited store) falls back to the default rather than failing.
    pub fn settings(&self, default_segment_bytes: usize) -> TopicSettings {
        let int = |k: &str| {
            self.configs
                .get(k)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        TopicSettings {
            retention_ms: int("retention.ms").unwrap_or(DEFAULT_RETENTION_MS),
            retention_bytes: int("retention.bytes").unwrap_or(DEFAULT_RETENTION_BYTES),
            segment_bytes: int("segment.bytes")
                .filter(|v| *v > 0)
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(default_segment_bytes),
            segment_ms: int("segment.ms")
                .filter(|v| *v > 0)
                .unwrap_or(DEFAULT_SEGMENT_MS),
            max_message_bytes: int("max.message.bytes").and_then(|v| usize::try_from(v).ok()),
            log_append_time: self
                .configs
                .get("message.timestamp.type")
                .is_some_and(|v| v.trim() == "LogAppendTime"),
            delete_policy: self
                .configs
                .get("cleanup.policy")
                .is_none_or(|v| v.split(',').any(|p| p.trim() == "delete")),
            compact: self
                .configs
                .get("cleanup.policy")
                .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact")),
            delete_retention_ms: int("delete.retention.ms")
                .filter(|v| *v >= 0)
                .unwrap_or(DEFAULT_DELETE_RETENTION_MS),
            min_compaction_lag_ms: int("min.compaction.lag.ms")
                .filter(|v| *v >= 0)
                .unwrap_or(0),
            max_compaction_lag_ms: int("max.compaction.lag.ms")
                .filter(|v| *v > 0)
                .unwrap_or(i64::MAX),
            min_cleanable_ratio_ppm: self
                .configs
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| (0.0..=1.0).contains(v))
                .map_or(500_000, |v| (v * 1e6).round() as u32),
        }
    }
}

/// Everything the store keeps about topics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterState {
    pub cluster_id: String,
    pub topics: Vec<TopicMeta>,
    /// Grows with every change of the stored topics (etcd: the snapshot key's mod
    /// revision), so that a broker applies a snapshot only if it is newer than the
    /// one it has, whichever way (its own write or the watch) it arrived first.
    #[serde(default)]
    pub revision: i64,
}

/// A committed offset as stored (etcd: `/kafscale/consumers/{group}/offsets/{topic}/{partition}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OffsetMeta {
    pub offset: i64,
    /// The leader epoch the client sent with the commit (-1 when none).
    #[serde(default = "minus_one")]
    pub leader_epoch: i32,
    #[serde(default)]
    pub metadata: Option<String>,
    /// Milliseconds since the epoch when the commit was stored.
    #[serde(default)]
    pub commit_ms: i64,
}

fn minus_one() -> i32 {
    -1
}

/// One member of a group as stored, so that static members survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredMember {
    pub member_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's subscription for the selected protocol (opaque to the broker).
    #[serde(default, with = "b64")]
    pub subscription: Vec<u8>,
    /// The leader's assignment for this member, handed out verbatim.
    #[serde(default, with = "b64")]
    pub assignment: Vec<u8>,
}

/// Group metadata as stored (etcd: `/kafscale/consumers/{group}/metadata`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupMeta {
    pub protocol_type: String,
    #[serde(default)]
    pub protocol: Option<String>,
    pub generation: i32,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub members: Vec<StoredMember>,
    /// Set for a group of the consumer protocol (KIP-848); the classic fields
    /// above are then unused (`protocol_type` is `consumer`, `generation` the
    /// group epoch, for tools that read only those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ConsumerGroupMeta>,
}

/// A consumer-protocol group as stored: epochs, the subscribed topics' partition
/// counts, and every member with its subscription, reconciliation state, current
/// and target assignment (partitions by topic name).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConsumerGroupMeta {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    #[serde(default)]
    pub assignor: String,
    #[serde(default)]
    pub subscribed: BTreeMap<String, i32>,
    #[serde(default)]
    pub members: Vec<StoredConsumerMember>,
}

/// Partitions by topic name.
pub type TopicPartitionSet = BTreeMap<String, std::collections::BTreeSet<i32>>;

/// One member of a consumer-protocol group as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredConsumerMember {
    pub member_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub rack_id: Option<String>,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_host: String,
    pub member_epoch: i32,
    #[serde(default)]
    pub previous_member_epoch: i32,
    /// 0 stable, 1 revoking partitions, 2 waiting for partitions others hold.
    #[serde(default)]
    pub state: u8,
    #[serde(default)]
    pub rebalance_timeout_ms: i32,
    #[serde(default)]
    pub topic_names: Vec<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub assignor: Option<String>,
    #[serde(default)]
    pub assigned: TopicPartitionSet,
    #[serde(default)]
    pub revoking: TopicPartitionSet,
    #[serde(default)]
    pub target: TopicPartitionSet,
    /// A static member that left with epoch -2, its partitions held for it.
    #[serde(default)]
    pub left: bool,
    /// The topics its regex matched when last resolved.
    #[serde(default)]
    pub regex_matches: Vec<String>,
}

/// A consumer-protocol group with one member in every field, for the stores'
/// round-trip tests.
#[cfg(test)]
pub(crate) fn sample_consumer_meta() -> ConsumerGroupMeta {
    ConsumerGroupMeta {
        group_epoch: 5,
        assignment_epoch: 5,
        assignor: "uniform".into(),
        subscribed: [("t".to_string(), 3)].into_iter().collect(),
        members: vec![StoredConsumerMember {
            member_id: "c-1".into(),
            instance_id: Some("i2".into()),
            member_epoch: 5,
            previous_member_epoch: 4,
            state: 1,
            topic_names: vec!["t".into()],
            regex: Some("t.*".into()),
            assigned: [("t".to_string(), [0, 2].into_iter().collect())]
                .into_iter()
                .collect(),
            revoking: [("t".to_string(), [1].into_iter().collect())]
                .into_iter()
                .collect(),
            left: true,
            ..Default::default()
        }],
    }
}

/// Everything stored about one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredGroup {
    pub group_id: String,
    pub meta: Option<GroupMeta>,
    pub offsets: Vec<(String, i32, OffsetMeta)>,
}

/// Byte strings as base64 in JSON documents, so they stay small and readable.
mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(b: &[u8]) -> String {
        let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            acc = acc << 6 | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits & 0xff) as u8);
            }
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).ok_or_else(|| serde::de::Error::custom("invalid base64"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("metadata store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store content is invalid: {0}")]
    Corrupt(String),
    /// The store did not answer in time or cannot be reached: retriable.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (permissions, limits): not retriable as is.
    #[error("metadata store refused the request: {0}")]
    Refused(String),
    /// Another live broker owns the partition (or is releasing it): retriable
    /// once it lets go or its lease expires.
    #[error("partition {topic}-{partition} is owned by broker {owner}")]
    NotOwner {
        topic: String,
        partition: i32,
        owner: i32,
    },
    /// The partition has no assignment to claim under (its topic is being
    /// deleted, or the controller has not assigned it yet).
    #[error("partition {topic}-{partition} is not assigned")]
    Unassigned { topic: String, partition: i32 },
    /// This broker no longer owns the partition it tried to publish: the owner key
    /// it claimed is gone (lease lost) or belongs to another claim.
    #[error("ownership of partition {topic}-{partition} was lost")]
    Fenced { topic: String, partition: i32 },
    /// Another live broker holds this broker's id.
    #[error("broker id {id} is already registered by a live broker at {host}:{port}; every broker needs a distinct KAFSCALE_BROKER_ID")]
    BrokerIdTaken { id: i32, host: String, port: i32 },
}

impl MetaError {
    /// True when the same request may succeed later without any change.
    pub fn is_retriable(&self) -> bool {
        matches!(self, MetaError::Unavailable(_) | MetaError::Io(_))
    }
}

/// Security records (SCRAM credentials, ACLs): key relative to the security prefix →
/// value, the whole set at once.
pub type SecurityRecords = Arc<BTreeMap<String, Vec<u8>>>;
/// The security records as they change: the current set first, then the whole
/// set after every change.
pub type SecurityStream = futures::stream::BoxStream<'static, SecurityRecords>;

/// Snapshots of the stored topics as they change, newest last.
pub type SnapshotStream = futures::stream::BoxStream<'static, ClusterState>;
/// The live set, the controller and the assignments as they change.
pub type LiveStream = futures::stream::BoxStream<'static, Arc<Live>>;

/// A partition's committed state (etcd: `PartitionState`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// One past the last offset ever published; 0: nothing published yet.
    pub next_offset: i64,
    /// The first offset of the log; segments below it are not the topic's.
    pub log_start: i64,
}

/// A partition's compaction manifest (docs/compaction.md): the offset ranges
/// whose segments were replaced by compacted objects. Recovery serves a range
/// from its compacted object and ignores the plain segments inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Oldest first, not overlapping.
    pub ranges: Vec<CompactedRange>,
    /// The earliest delete horizon (ms) of a tombstone kept in the ranges; 0: none.
    #[serde(default)]
    pub horizon_ms: i64,
}

/// One compacted range of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedRange {
    pub base: i64,
    pub last: i64,
    /// The object's id (`segstore::keys::object_path`); 0: nothing was kept.
    pub gen: u64,
    /// Size of the `.kfs` object.
    pub bytes: u64,
}

impl Manifest {
    /// One past the last compacted offset (Kafka's cleaner checkpoint): the
    /// log is dirty from here on.
    pub fn clean_end(&self) -> Option<i64> {
        self.ranges.last().map(|r| r.last + 1)
    }
}

/// A granted claim on a partition: the fencing token every publish compares
/// (etcd: the owner key's create revision) and the leader epoch it bumped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claim {
    pub token: i64,
    pub epoch: i32,
}

/// The ownership space of consumer-group coordinators: a group's coordinator is
/// the owner of slot `crc32c(group) % GROUP_SLOTS` of this pseudo-topic, which the
/// controller assigns like any topic (it is never a readable topic).
pub const GROUPS_TOPIC: &str = "__consumer_offsets";
pub const GROUP_SLOTS: usize = 50;

/// The slot of a group in the coordinators' ownership space.
pub fn group_slot(group: &str) -> i32 {
    (crc32c::crc32c(group.as_bytes()) % GROUP_SLOTS as u32) as i32
}

/// Which broker should own each partition of a topic (the controller's target).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicAssignment {
    pub topic_id: Uuid,
    pub owners: Vec<i32>,
}

/// The cluster beyond topics: live brokers, the controller and the assignments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// False for a broker on the embedded store: it is alone and owns everything.
    pub clustered: bool,
    /// Live brokers: id → (host, port).
    pub brokers: BTreeMap<i32, (String, i32)>,
    /// Live brokers' listeners: id → (listener name, host, port) for each; empty
    /// for a broker that registered none (it predates listeners: `brokers` only).
    pub listeners: BTreeMap<i32, Vec<(String, String, i32)>>,
    pub controller: Option<i32>,
    pub assignments: HashMap<String, TopicAssignment>,
    /// Partition claims: (topic, partition) → the claim last seen. Kept after the
    /// owner key is gone (with `broker` None), so the epoch a client is shown
    /// never goes back.
    pub owners: HashMap<String, HashMap<i32, OwnerSeen>>,
}

/// A partition's owner key as last seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OwnerSeen {
    pub topic_id: Uuid,
    /// The owning broker while the key exists.
    pub broker: Option<i32>,
    pub epoch: i32,
}

/// Durable metadata. Implementations: the embedded file store (single broker) and
/// etcd (`KAFSCALE_ETCD_ENDPOINTS`). Calls run on the I/O runtime, so futures are
/// `Send`. Every method returns only once its change is durable, and within a
/// bounded time (etcd calls time out with `MetaError::Unavailable`).
///
/// The group methods are coarse on purpose: one call per Kafka request, so that an
/// etcd implementation can make each one a single transaction.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    async fn load(&self) -> Result<ClusterState, MetaError>;
    /// Adds a topic; returns the stored state with it (and its new revision).
    async fn create_topic(&self, topic: TopicMeta) -> Result<ClusterState, MetaError>;
    /// Marks a topic for deletion (first step of DeleteTopics; again is a no-op):
    /// from the returned state on it is served and owned by no broker and its
    /// name cannot be created. Returns the state and the topic's id.
    async fn mark_deleting(&self, name: &str) -> Result<(ClusterState, Uuid), MetaError>;
    /// Takes the right to finish deleting topic `id` (its objects, then its
    /// metadata): false while another broker holds it. Held until this broker's
    /// lease ends (the final removal deletes it).
    async fn claim_deletion(&self, _name: &str, _id: Uuid) -> Result<bool, MetaError> {
        Ok(true)
    }
    /// How many partitions of topic `name` a broker still holds a claim on.
    async fn owners_left(&self, _name: &str) -> Result<usize, MetaError> {
        Ok(0)
    }
    /// Last step of DeleteTopics, after the objects are gone: removes topic `id`
    /// and its partition state; returns the stored state without it.
    async fn delete_topic(&self, name: &str, id: Uuid) -> Result<ClusterState, MetaError>;
    /// Every later change of the stored topics (made by this broker, another one or
    /// an operator), starting after `revision`. The stream outlives store outages:
    /// it resumes by itself and never ends while the store exists.
    async fn watch(&self, revision: i64) -> Result<SnapshotStream, MetaError>;
    /// Whether partitions' next offsets are committed to this store after every
    /// segment upload. False for the embedded store, whose broker recovers them
    /// from the segments alone (nothing else writes them).
    fn tracks_partition_state(&self) -> bool;
    /// What was committed for a partition of the topic with this id, if anything.
    async fn partition_state(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<Committed>, MetaError>;
    /// Records that everything below `next_offset` of the partition is durable
    /// and that the log starts at `log_start`, only while `claim` is still this
    /// broker's (`MetaError::Fenced` otherwise).
    async fn commit_partition(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        next_offset: i64,
        log_start: i64,
        claim: Claim,
    ) -> Result<(), MetaError>;
    /// The partition's compaction manifest, if one was committed for the topic with this id.
    async fn compaction(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<Manifest>, MetaError>;
    /// Replaces the partition's compaction manifest, only while `claim` is still
    /// this broker's (`MetaError::Fenced` otherwise).
    async fn commit_compaction(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        manifest: &Manifest,
        claim: Claim,
    ) -> Result<(), MetaError>;
    /// Whether partitions are owned through claims (several brokers). False for
    /// the embedded store: its only broker owns everything.
    fn tracks_ownership(&self) -> bool {
        false
    }
    /// Claims a partition for this broker (bumping its leader epoch), or
    /// `NotOwner` while another live broker holds it.
    async fn claim_partition(
        &self,
        _topic: &str,
        _topic_id: Uuid,
        _partition: i32,
    ) -> Result<Claim, MetaError> {
        Ok(Claim::default())
    }
    /// Gives a claimed partition up (its next owner may claim it at once).
    async fn release_partition(
        &self,
        _topic: &str,
        _partition: i32,
        _claim: Claim,
    ) -> Result<(), MetaError> {
        Ok(())
    }
    /// Marks this broker as drained (ctl drain) or not: a cluster's controller
    /// assigns a drained broker no partitions and no coordinator slots.
    async fn set_draining(&self, _on: bool) -> Result<(), MetaError> {
        Ok(())
    }
    /// Gives up everything this broker holds (its registration, claims and the
    /// controller role) at shutdown, once everything it buffered is published.
    async fn resign(&self) {}
    /// False from shortly before this broker's lease could expire until it is
    /// renewed: its claims may be gone by then, so it accepts no writes.
    fn writable(&self) -> bool {
        true
    }
    /// The live set, controller and assignments: the current value first, then
    /// every change. The embedded store's never changes.
    async fn watch_live(&self) -> Result<LiveStream, MetaError> {
        Ok(futures::stream::pending().boxed())
    }
    /// Replaces an existing topic's partition count and configs (AlterConfigs,
    /// IncrementalAlterConfigs, CreatePartitions); returns the stored state with
    /// it. The name and id stay the same; `UnknownTopic` if the topic is gone.
    async fn update_topic(&self, topic: TopicMeta) -> Result<ClusterState, MetaError>;
    /// Every stored group with its metadata and committed offsets.
    async fn load_groups(&self) -> Result<Vec<StoredGroup>, MetaError>;
    // The group writes below take the coordinator's claim on the group's slot
    // (clusters; `Claim::default()` alone) and fail with `Fenced` without it.
    /// Replaces a group's metadata (members, generation, assignment).
    async fn put_group(&self, group: &str, meta: GroupMeta, claim: Claim) -> Result<(), MetaError>;
    /// Stores committed offsets of a group, replacing earlier commits of the same partitions.
    async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, OffsetMeta)>,
        claim: Claim,
    ) -> Result<(), MetaError>;
    /// Removes a group's committed offsets of one topic (the topic was deleted).
    async fn delete_topic_offsets(
        &self,
        group: &str,
        topic: &str,
        claim: Claim,
    ) -> Result<(), MetaError>;
    /// Removes a group's committed offsets of these partitions (OffsetDelete).
    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
        claim: Claim,
    ) -> Result<(), MetaError>;
    /// Removes a group: its metadata and all its offsets.
    async fn delete_group(&self, group: &str, claim: Claim) -> Result<(), MetaError>;
    /// The security records (etcd: under `/kafscale/security/`), now and after
    /// every change by any broker. The stream outlives store outages.
    async fn watch_security(&self) -> Result<SecurityStream, MetaError>;
    /// Writes (Some) and removes (None) security records, all at once.
    async fn put_security(&self, changes: Vec<(String, Option<Vec<u8>>)>) -> Result<(), MetaError>;
}

/// Immutable view of the cluster, shared by `Arc` and replaced as a whole.
#[derive(Debug)]
pub struct Cluster {
    pub cluster_id: String,
    /// The revision of the stored state this view was built from.
    pub revision: i64,
    pub broker_id: i32,
    pub host: String,
    pub port: i32,
    /// The topics served: every stored topic but those being deleted.
    pub topics: HashMap<String, Arc<TopicMeta>>,
    pub by_id: HashMap<Uuid, Arc<TopicMeta>>,
    /// Topics whose deletion has begun, by name.
    pub deleting: HashMap<String, Arc<TopicMeta>>,
    /// Brokers, controller and assignments (replaced on its own, topics kept).
    pub live: Arc<Live>,
}

impl Cluster {
    pub fn new(state: &ClusterState, broker_id: i32, host: String, port: i32) -> Self {
        let mut topics = HashMap::new();
        let mut by_id = HashMap::new();
        let mut deleting = HashMap::new();
        for t in &state.topics {
            let t = Arc::new(t.clone());
            if t.deleting {
                deleting.insert(t.name.clone(), t);
                continue;
            }
            by_id.insert(t.id, t.clone());
            topics.insert(t.name.clone(), t);
        }
        Cluster {
            cluster_id: state.cluster_id.clone(),
            revision: state.revision,
            broker_id,
            host,
            port,
            topics,
            by_id,
            deleting,
            live: Arc::new(Live::default()),
        }
    }

    /// This view with another live set and assignments.
    pub fn with_live(mut self, live: Arc<Live>) -> Self {
        self.live = live;
        self
    }

    /// The live brokers as clients see them, (id, host, port) by id: this one
    /// alone on the embedded store.
    pub fn brokers(&self) -> Vec<(i32, &str, i32)> {
        if self.live.clustered {
            self.live
                .brokers
                .iter()
                .map(|(id, (host, port))| (*id, host.as_str(), *port))
                .collect()
        } else {
            vec![(self.broker_id, self.host.as_str(), self.port)]
        }
    }

    /// Every served topic with all its partitions, by name (admin APIs asked
    /// about "all partitions").
    pub fn all_partitions(&self) -> Vec<(String, Vec<i32>)> {
        let mut all: Vec<_> = self
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions).collect()))
            .collect();
        all.sort();
        all
    }

    /// The controller clients are told about: always a broker listed beside it
    /// (-1 only while no broker is live). A client told of a controller it was
    /// not given an address for waits for that broker until its next full
    /// metadata refresh (librdkafka's admin requests: minutes), and between a
    /// controller's exit and the next election the elected key can name a
    /// broker that is gone. Every broker serves what clients send to "the
    /// controller" (topics, ACLs, configs go through the metadata store), so
    /// then this broker stands in, as a KRaft broker names a random live one.
    pub fn controller_id(&self) -> i32 {
        if !self.live.clustered {
            return self.broker_id;
        }
        let live = |id: &i32| self.live.brokers.contains_key(id);
        self.live
            .controller
            .filter(live)
            .or(Some(self.broker_id).filter(live))
            .or_else(|| self.live.brokers.keys().next().copied())
            .unwrap_or(-1)
    }

    /// The broker that should own partition `p` of `t` now: this one when it is
    /// alone, else the assigned broker if it is live. None: no leader yet.
    pub fn leader(&self, t: &TopicMeta, p: i32) -> Option<i32> {
        if !self.live.clustered {
            return Some(self.broker_id);
        }
        self.assigned(&t.name, t.id, p)
    }

    fn assigned(&self, topic: &str, id: Uuid, p: i32) -> Option<i32> {
        let a = self.live.assignments.get(topic)?;
        if a.topic_id != id {
            return None;
        }
        let owner = *a.owners.get(usize::try_from(p).ok()?)?;
        self.live.brokers.contains_key(&owner).then_some(owner)
    }

    /// The leader epoch clients are shown for partition `p` of `t`: the newest
    /// claim's (0 before any, and for a broker alone).
    pub fn leader_epoch(&self, t: &TopicMeta, p: i32) -> i32 {
        match self.owner_seen(t, p) {
            Some(o) if o.topic_id == t.id => o.epoch,
            _ => 0,
        }
    }

    /// Whether partition `p` of `t` is assigned to this broker and nobody holds
    /// it: this broker should claim it now.
    pub fn unclaimed_mine(&self, t: &TopicMeta, p: i32) -> bool {
        self.live.clustered
            && self.owns(t, p)
            && self
                .owner_seen(t, p)
                .is_none_or(|o| o.topic_id != t.id || o.broker.is_none())
    }

    /// The last claim seen on partition `p` of `t` (looked up without allocating:
    /// Metadata asks for every partition of every topic).
    fn owner_seen(&self, t: &TopicMeta, p: i32) -> Option<&OwnerSeen> {
        self.live.owners.get(t.name.as_str())?.get(&p)
    }

    /// Whether this broker should own partition `p` of `t`.
    pub fn owns(&self, t: &TopicMeta, p: i32) -> bool {
        self.leader(t, p) == Some(self.broker_id)
    }

    /// The coordinator of a group: this broker when alone, else the owner of the
    /// group's slot. None: no coordinator yet.
    pub fn coordinator(&self, group: &str) -> Option<i32> {
        self.slot_owner(group_slot(group))
    }

    /// The broker coordinating the groups of `slot` (see `coordinator`).
    pub fn slot_owner(&self, slot: i32) -> Option<i32> {
        if !self.live.clustered {
            return Some(self.broker_id);
        }
        self.assigned(GROUPS_TOPIC, Uuid::nil(), slot)
    }

    /// A live broker's advertised address (this broker's own when alone).
    pub fn broker_addr(&self, id: i32) -> Option<(String, i32)> {
        if !self.live.clustered || id == self.broker_id {
            return (id == self.broker_id).then(|| (self.host.clone(), self.port));
        }
        self.live.brokers.get(&id).cloned()
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    /// The persisted form of this snapshot.
    pub fn state(&self) -> ClusterState {
        let mut topics: Vec<TopicMeta> = self
            .topics
            .values()
            .chain(self.deleting.values())
            .map(|t| (**t).clone())
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterState {
            cluster_id: self.cluster_id.clone(),
            topics,
            revision: self.revision,
        }
    }

    #[cfg(test)]
    pub fn with_topic(&self, t: TopicMeta) -> Self {
        let mut s = self.state();
        s.topics.retain(|x| x.name != t.name);
        s.topics.push(t);
        Cluster::new(&s, self.broker_id, self.host.clone(), self.port).with_live(self.live.clone())
    }

    /// This view with `name` marked for deletion: no longer served.
    pub fn deleting_topic(&self, name: &str) -> Self {
        let mut s = self.state();
        for t in s.topics.iter_mut().filter(|t| t.name == name) {
            t.deleting = true;
        }
        Cluster::new(&s, self.broker_id, self.host.clone(), self.port).with_live(self.live.clone())
    }
}

/// Kafka's topic name rules: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders.v1_eu-west"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..10u8 {
            let b: Vec<u8> = (0..n).map(|i| i.wrapping_mul(97)).collect();
            assert_eq!(b64::decode(&b64::encode(&b)).as_deref(), Some(&b[..]));
        }
        assert_eq!(b64::encode(b"Man"), "TWFu");
        assert_eq!(b64::encode(b"Ma"), "TWE=");
        assert!(b64::decode("T!").is_none());
    }

    #[test]
    fn the_controller_named_to_clients_is_a_live_broker() {
        let c = || Cluster::new(&ClusterState::default(), 1, "h".into(), 9092);
        let with = |ids: &[i32], controller: Option<i32>| {
            let live = Live {
                clustered: true,
                brokers: ids.iter().map(|id| (*id, ("h".into(), 9092))).collect(),
                controller,
                ..Live::default()
            };
            c().with_live(Arc::new(live)).controller_id()
        };
        assert_eq!(with(&[1, 2, 3], Some(2)), 2);
        // The elected broker is gone (its key outlived its registration).
        assert_eq!(with(&[1, 3], Some(2)), 1);
        assert_eq!(with(&[1, 3], None), 1);
        // This broker not (yet) listed itself: another live one.
        assert_eq!(with(&[3, 4], Some(2)), 3);
        assert_eq!(with(&[], Some(2)), -1);
        // Alone on the embedded store: itself.
        assert_eq!(c().controller_id(), 1);
    }

    #[test]
    fn snapshot_add_and_remove() {
        let c = Cluster::new(&ClusterState::default(), 1, "h".into(), 9092);
        let t = TopicMeta {
            name: "a".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: Default::default(),
            deleting: false,
        };
        let c2 = c.with_topic(t.clone());
        assert_eq!(c2.topic("a").map(|t| t.partitions), Some(3));
        assert!(c2.by_id.contains_key(&t.id));
        let mut t2 = t.clone();
        t2.configs.insert("segment.bytes".into(), "4096".into());
        t2.configs.insert("retention.ms".into(), "2000".into());
        let s = t2.settings(1 << 20);
        assert_eq!(
            (s.segment_bytes, s.retention_ms, s.retention_bytes),
            (4096, 2000, -1)
        );
        assert_eq!(t.settings(1 << 20).segment_bytes, 1 << 20);
        assert!(s.has_retention() && !t.settings(1).has_retention());
        assert_eq!(
            (s.segment_ms, s.max_message_bytes, s.log_append_time),
            (DEFAULT_SEGMENT_MS, None, false)
        );
        // A compact-only topic keeps its segments whatever its retention says;
        // compact,delete deletes by retention.
        t2.configs.insert("cleanup.policy".into(), "compact".into());
        assert!(!t2.settings(1).has_retention());
        t2.configs
            .insert("cleanup.policy".into(), "compact, delete".into());
        t2.configs.insert("max.message.bytes".into(), "512".into());
        t2.configs
            .insert("message.timestamp.type".into(), "LogAppendTime".into());
        t2.configs.insert("segment.ms".into(), "100".into());
        let s = t2.settings(1);
        assert!(s.has_retention() && s.compact);
        assert_eq!(
            (
                s.delete_retention_ms,
                s.min_compaction_lag_ms,
                s.min_cleanable_ratio_ppm
            ),
            (DEFAULT_DELETE_RETENTION_MS, 0, 500_000)
        );
        assert!(!t.settings(1).compact);
        assert_eq!(
            (s.segment_ms, s.max_message_bytes, s.log_append_time),
            (100, Some(512), true)
        );
        let c3 = c2.deleting_topic("a");
        assert!(c3.topic("a").is_none() && c3.by_id.is_empty());
        assert!(c3.deleting.contains_key("a"));
        let back = c3.state();
        assert!(back.topics.len() == 1 && back.topics[0].deleting);
    }
}
