//! Cluster metadata: topics, their ids, partition counts and configs.
//!
//! `MetadataStore` is the durable home of that state; `Cluster` is the immutable
//! snapshot each shard reads without locks (swapped as a whole on change).

pub mod embedded;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// Everything the store keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: String,
    pub topics: Vec<TopicMeta>,
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
}

/// Durable metadata. Implementations: the embedded file store (single broker) and,
/// later, etcd. Calls run on the I/O runtime, so futures are `Send`.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    async fn load(&self) -> Result<ClusterState, MetaError>;
    async fn create_topic(&self, topic: TopicMeta) -> Result<(), MetaError>;
    async fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetaError>;
}

/// Immutable view of the cluster, shared by `Arc` and replaced as a whole.
#[derive(Debug)]
pub struct Cluster {
    pub cluster_id: String,
    pub broker_id: i32,
    pub host: String,
    pub port: i32,
    pub topics: HashMap<String, Arc<TopicMeta>>,
    pub by_id: HashMap<Uuid, Arc<TopicMeta>>,
}

impl Cluster {
    pub fn new(state: &ClusterState, broker_id: i32, host: String, port: i32) -> Self {
        let mut topics = HashMap::new();
        let mut by_id = HashMap::new();
        for t in &state.topics {
            let t = Arc::new(t.clone());
            by_id.insert(t.id, t.clone());
            topics.insert(t.name.clone(), t);
        }
        Cluster {
            cluster_id: state.cluster_id.clone(),
            broker_id,
            host,
            port,
            topics,
            by_id,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    /// The persisted form of this snapshot.
    pub fn state(&self) -> ClusterState {
        let mut topics: Vec<TopicMeta> = self.topics.values().map(|t| (**t).clone()).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterState {
            cluster_id: self.cluster_id.clone(),
            topics,
        }
    }

    pub fn with_topic(&self, t: TopicMeta) -> Self {
        let mut s = self.state();
        s.topics.retain(|x| x.name != t.name);
        s.topics.push(t);
        Cluster::new(&s, self.broker_id, self.host.clone(), self.port)
    }

    pub fn without_topic(&self, name: &str) -> Self {
        let mut s = self.state();
        s.topics.retain(|x| x.name != name);
        Cluster::new(&s, self.broker_id, self.host.clone(), self.port)
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
    fn snapshot_add_and_remove() {
        let c = Cluster::new(&ClusterState::default(), 1, "h".into(), 9092);
        let t = TopicMeta {
            name: "a".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: Default::default(),
        };
        let c2 = c.with_topic(t.clone());
        assert_eq!(c2.topic("a").map(|t| t.partitions), Some(3));
        assert!(c2.by_id.contains_key(&t.id));
        let c3 = c2.without_topic("a");
        assert!(c3.topic("a").is_none() && c3.by_id.is_empty());
    }
}
