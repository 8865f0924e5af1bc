//! The operator's side of the metadata store: it writes topics into the same
//! etcd keys and protobuf values the brokers read (`kafscale_proto::keys`,
//! `kafscale_proto::metadata`, docs/metadata.md), with the brokers' own
//! compare-and-swap on the snapshot's mod revision (`kafscale_proto::snapshot`),
//! so a broker creating a topic at the same moment and the operator never lose
//! each other's change.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions, TxnOp};
use kafscale_proto::metadata as pb;
use kafscale_proto::snapshot::{self, Change, SnapshotError, Snapshots};
use kafscale_proto::{keys, Message};
use uuid::Uuid;

use k8s_openapi::api::core::v1::Secret;

use crate::crd::EtcdTlsSpec;
use crate::drift::{self, Differs};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd {what}: {source}")]
    Call {
        what: &'static str,
        source: etcd_client::Error,
    },
    #[error("etcd {0}: no answer within the deadline")]
    Timeout(&'static str),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// TLS towards etcd (`spec.etcd.tls`): PEM contents from the cluster's Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Vec<u8>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub server_name: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca.len())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl EtcdTls {
    /// From the Secret `spec` names (`secret`: None when it does not exist);
    /// Err says what is missing.
    pub fn from_secret(
        spec: &EtcdTlsSpec,
        ns: &str,
        secret: Option<&Secret>,
    ) -> Result<EtcdTls, String> {
        let name = &spec.secret_ref.name;
        let s = secret.ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        let key = |k: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|v| v.0.clone())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("Secret {ns}/{name} has no key {k}"))
        };
        let identity = if spec.client_certificate {
            Some((key("tls.crt")?, key("tls.key")?))
        } else {
            None
        };
        Ok(EtcdTls {
            ca: key("ca.crt")?,
            identity,
            server_name: spec.server_name.clone(),
        })
    }
}

/// A topic as the `KafscaleTopic` asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: i32,
    /// The configs the resource sets (it owns these keys; see `drift`).
    pub configs: BTreeMap<String, String>,
    /// What the operator last wrote for them (`status.appliedConfig`).
    pub last_applied: BTreeMap<String, String>,
    /// `configDrift: Keep`: runtime changes to owned keys are left as they are.
    pub keep_runtime: bool,
}

/// What the store holds for the topic after `apply_topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedTopic {
    pub topic_id: Uuid,
    pub partitions: i32,
    /// The spec asked for fewer partitions than the topic has; the count was kept.
    pub decrease_refused: bool,
    /// Whether anything was written (false: the store already matched).
    pub written: bool,
    /// Owned keys changed at runtime and set back.
    pub reverted: Vec<String>,
    /// Owned keys changed at runtime and kept (`keep_runtime`).
    pub differs: Vec<Differs>,
    /// The topic of this name is marked for deletion and was left alone: the
    /// brokers delete its objects under its id, and a topic written over it
    /// would lose them (retried until the deletion is finished).
    pub being_deleted: bool,
}

/// What `delete_topic` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Marked now; the brokers finish the deletion.
    Marked,
    /// It was already marked (a retry, or a DeleteTopics got there first).
    AlreadyMarked,
    /// No topic of that name.
    Absent,
}

pub struct Metadata {
    snapshots: Snapshots,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Metadata {
    /// Connects (over TLS when given, and authenticates) within `timeout`, which
    /// also bounds every call.
    pub async fn connect(
        endpoints: &[String],
        creds: Option<&EtcdCredentials>,
        tls: Option<&EtcdTls>,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let mut opts = ConnectOptions::new().with_connect_timeout(timeout);
        if let Some(c) = creds {
            opts = opts.with_user(c.username.clone(), c.password.clone());
        }
        if let Some(t) = tls {
            let mut o = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca));
            if let Some((cert, key)) = &t.identity {
                o = o.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &t.server_name {
                o = o.domain_name(d.clone());
            }
            opts = opts.with_tls(o);
        }
        let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| EtcdError::Timeout("connect"))?
            .map_err(|source| EtcdError::Call {
                what: "connect",
                source,
            })?;
        Ok(Metadata {
            snapshots: Snapshots::new(client.kv_client(), timeout),
        })
    }

    /// The snapshot and its mod revision (0: the key does not exist yet).
    pub async fn snapshot(&self) -> Result<(pb::ClusterSnapshot, i64), EtcdError> {
        Ok(self.snapshots.read().await?)
    }

    /// Creates the topic, or brings its partition count (up only) and the configs
    /// it owns to the desired ones (`drift::plan`: keys it does not set are left
    /// to the runtime), in the snapshot and at `/kafscale/topics/{topic}/config`
    /// in one transaction. Writes nothing when the store already matches, so an
    /// unchanged resource does not wake every broker's watch.
    pub async fn apply_topic(&self, want: &DesiredTopic) -> Result<AppliedTopic, EtcdError> {
        let updated = self
            .snapshots
            .update("put topic", |snap| {
                let (topic, applied) = match snap.topics.iter_mut().find(|t| t.name == want.name) {
                    Some(t) if t.deleting => {
                        return Ok(Change::Keep(AppliedTopic {
                            topic_id: snapshot::topic_id(t)?,
                            partitions: t.partitions,
                            decrease_refused: false,
                            written: false,
                            reverted: Vec::new(),
                            differs: Vec::new(),
                            being_deleted: true,
                        }));
                    }
                    Some(t) => {
                        let topic_id = snapshot::topic_id(t)?;
                        let decrease_refused = want.partitions < t.partitions;
                        let partitions = want.partitions.max(t.partitions);
                        let stored: BTreeMap<String, String> =
                            t.configs.clone().into_iter().collect();
                        let plan = drift::plan(
                            &want.configs,
                            &want.last_applied,
                            &stored,
                            want.keep_runtime,
                        );
                        let mut applied = AppliedTopic {
                            topic_id,
                            partitions,
                            decrease_refused,
                            written: false,
                            reverted: plan.reverted,
                            differs: plan.differs,
                            being_deleted: false,
                        };
                        if partitions == t.partitions && plan.configs == stored {
                            return Ok::<_, EtcdError>(Change::Keep(applied));
                        }
                        t.partitions = partitions;
                        t.configs = plan.configs.into_iter().collect();
                        applied.written = true;
                        (t.clone(), applied)
                    }
                    None => {
                        let topic_id = Uuid::new_v4();
                        let t = pb::TopicConfig {
                            name: want.name.clone(),
                            topic_id: topic_id.as_bytes().to_vec(),
                            partitions: want.partitions,
                            configs: want.configs.clone().into_iter().collect(),
                            created_ms: now_ms(),
                            deleting: false,
                        };
                        snap.topics.push(t.clone());
                        snap.topics.sort_by(|a, b| a.name.cmp(&b.name));
                        let applied = AppliedTopic {
                            topic_id,
                            partitions: want.partitions,
                            decrease_refused: false,
                            written: true,
                            reverted: Vec::new(),
                            differs: Vec::new(),
                            being_deleted: false,
                        };
                        (t, applied)
                    }
                };
                let config =
                    TxnOp::put(keys::topic_config(&want.name), topic.encode_to_vec(), None);
                Ok(Change::Write(vec![config], applied))
            })
            .await?;
        Ok(updated.value)
    }

    /// Deletes the topic the way a broker's DeleteTopics starts it: marks it
    /// `deleting` in the snapshot and removes its assignment in one transaction
    /// (claims compare the assignment, so no broker can claim its partitions from
    /// then on). The brokers do the rest (docs/cluster.md, "Topics across
    /// brokers"): the owners let go, the controller deletes the objects, then the
    /// topic's keys. With no broker running the mark waits for the next one.
    pub async fn delete_topic(&self, name: &str) -> Result<Deletion, EtcdError> {
        let updated = self
            .snapshots
            .update("mark topic deleted", |snap| {
                let Some(t) = snap.topics.iter_mut().find(|t| t.name == name) else {
                    return Ok::<_, EtcdError>(Change::Keep(Deletion::Absent));
                };
                if t.deleting {
                    return Ok(Change::Keep(Deletion::AlreadyMarked));
                }
                t.deleting = true;
                Ok(Change::Write(
                    vec![TxnOp::delete(keys::assignment(name), None)],
                    Deletion::Marked,
                ))
            })
            .await?;
        Ok(updated.value)
    }
}
