//! The read-modify-write of `/kafscale/metadata/snapshot`, shared by the brokers
//! (topic create, delete, config change) and the operator (`KafscaleTopic`).
//!
//! The snapshot holds every topic in one value. A writer reads it with its mod
//! revision, changes it, and writes it in a transaction that compares that revision
//! (0: the key does not exist yet), together with whatever other keys the change
//! names (the topic's `config` key, the removal of its prefix). When another
//! writer got in between, the compare fails and the change is applied again to the
//! fresh snapshot, up to [`MAX_CAS_ATTEMPTS`] times, so concurrent writers never
//! lose each other's topics. Every etcd call has the caller's deadline.
//!
//! The two etcd calls go through [`SnapshotKv`] (implemented for
//! `etcd_client::KvClient`), so the loop's retries are tested without etcd.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp};
use prost::Message;
use uuid::Uuid;

use crate::keys;
use crate::metadata::{ClusterSnapshot, TopicConfig};

/// Attempts of a read-modify-write that keeps losing the compare.
pub const MAX_CAS_ATTEMPTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("etcd {what}: {source}")]
    Etcd {
        what: &'static str,
        source: etcd_client::Error,
    },
    #[error("etcd {what}: no answer within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("etcd key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("etcd {what}: the snapshot kept changing under {attempts} attempts")]
    Contended { what: &'static str, attempts: usize },
}

/// The etcd calls of the loop.
pub trait SnapshotKv {
    /// The snapshot's value and mod revision; None when the key does not exist.
    fn get_snapshot(
        &self,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, i64)>, etcd_client::Error>> + Send;

    /// Puts `value` at the snapshot key, with `ops`, in one transaction that
    /// compares the key's mod revision with `revision`. Some(revision of the
    /// write) when it was applied, None when the compare failed.
    fn put_snapshot_if(
        &self,
        revision: i64,
        value: Vec<u8>,
        ops: Vec<TxnOp>,
    ) -> impl Future<Output = Result<Option<i64>, etcd_client::Error>> + Send;
}

impl SnapshotKv for KvClient {
    async fn get_snapshot(&self) -> Result<Option<(Vec<u8>, i64)>, etcd_client::Error> {
        let resp = self.clone().get(keys::SNAPSHOT, None).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    async fn put_snapshot_if(
        &self,
        revision: i64,
        value: Vec<u8>,
        mut ops: Vec<TxnOp>,
    ) -> Result<Option<i64>, etcd_client::Error> {
        ops.insert(0, TxnOp::put(keys::SNAPSHOT, value, None));
        // mod_revision 0 compares equal for a key that does not exist yet.
        let txn = Txn::new()
            .when([Compare::mod_revision(
                keys::SNAPSHOT,
                CompareOp::Equal,
                revision,
            )])
            .and_then(ops);
        let resp = self.clone().txn(txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }
}

/// What a change decided, given the current snapshot.
pub enum Change<T> {
    /// Write the (edited) snapshot with these further operations in the same
    /// transaction; `T` is the caller's result once the write landed.
    Write(Vec<TxnOp>, T),
    /// Nothing to write (the store already matches); the snapshot is left alone.
    Keep(T),
}

/// The outcome of [`Snapshots::update`].
#[derive(Debug)]
pub struct Updated<T> {
    /// The snapshot as stored now.
    pub snapshot: ClusterSnapshot,
    /// The revision of the write; with nothing written, the snapshot's mod revision.
    pub revision: i64,
    /// Whether the snapshot was written.
    pub written: bool,
    pub value: T,
}

/// The snapshot key of one etcd cluster, with a deadline for every call.
#[derive(Clone)]
pub struct Snapshots<K = KvClient> {
    kv: K,
    timeout: Duration,
}

impl<K: SnapshotKv> Snapshots<K> {
    pub fn new(kv: K, timeout: Duration) -> Self {
        Snapshots { kv, timeout }
    }

    async fn timed<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, SnapshotError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|source| SnapshotError::Etcd { what, source }),
            Err(_) => Err(SnapshotError::Timeout {
                what,
                after: self.timeout,
            }),
        }
    }

    /// The snapshot and its mod revision (an empty snapshot and 0 when the key
    /// does not exist).
    pub async fn read(&self) -> Result<(ClusterSnapshot, i64), SnapshotError> {
        match self.timed("get snapshot", self.kv.get_snapshot()).await? {
            Some((value, revision)) => Ok((decode(&value)?, revision)),
            None => Ok((ClusterSnapshot::default(), 0)),
        }
    }

    /// Read-modify-write: `change` edits a fresh copy of the snapshot (with a new
    /// cluster id when it has none) and says whether to write it; it runs again
    /// whenever another writer got in between. An error from `change` ends the
    /// loop without writing. `what` names the operation in errors.
    pub async fn update<T, E>(
        &self,
        what: &'static str,
        mut change: impl FnMut(&mut ClusterSnapshot) -> Result<Change<T>, E>,
    ) -> Result<Updated<T>, E>
    where
        E: From<SnapshotError>,
    {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut snapshot, read) = self.read().await?;
            if snapshot.cluster_id.is_empty() {
                snapshot.cluster_id = new_cluster_id();
            }
            let (ops, value) = match change(&mut snapshot)? {
                Change::Keep(value) => {
                    return Ok(Updated {
                        snapshot,
                        revision: read,
                        written: false,
                        value,
                    })
                }
                Change::Write(ops, value) => (ops, value),
            };
            let put = self.kv.put_snapshot_if(read, snapshot.encode_to_vec(), ops);
            if let Some(revision) = self.timed(what, put).await? {
                return Ok(Updated {
                    snapshot,
                    revision,
                    written: true,
                    value,
                });
            }
        }
        Err(SnapshotError::Contended {
            what,
            attempts: MAX_CAS_ATTEMPTS,
        }
        .into())
    }
}

/// The id of a cluster whose first snapshot is being written.
fn new_cluster_id() -> String {
    format!("kafscale-{}", Uuid::new_v4().simple())
}

/// A snapshot value as stored.
pub fn decode(value: &[u8]) -> Result<ClusterSnapshot, SnapshotError> {
    ClusterSnapshot::decode(value).map_err(|e| SnapshotError::Corrupt {
        key: keys::SNAPSHOT.into(),
        reason: e.to_string(),
    })
}

/// A snapshot topic's 16-byte id.
pub fn topic_id(t: &TopicConfig) -> Result<Uuid, SnapshotError> {
    Uuid::from_slice(&t.topic_id).map_err(|e| SnapshotError::Corrupt {
        key: keys::SNAPSHOT.into(),
        reason: format!("topic {}: {e}", t.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory snapshot key with etcd's compare semantics, and another
    /// writer that adds a topic right after each of the first `interfere` reads.
    #[derive(Default)]
    struct FakeKv {
        st: Mutex<FakeState>,
    }

    #[derive(Default, Clone)]
    struct FakeState {
        value: Option<Vec<u8>>,
        /// The store's revision (bumped by every write) and the key's.
        revision: i64,
        mod_revision: i64,
        interfere: usize,
        gets: usize,
        txns: usize,
        /// Further operations of the last applied transaction.
        last_ops: usize,
        fail: Option<&'static str>,
    }

    impl FakeState {
        fn put(&mut self, value: Vec<u8>) -> i64 {
            self.revision += 1;
            self.mod_revision = self.revision;
            self.value = Some(value);
            self.revision
        }
    }

    impl FakeKv {
        fn with(value: Option<ClusterSnapshot>) -> Self {
            let kv = FakeKv::default();
            if let Some(v) = value {
                kv.st().put(v.encode_to_vec());
            }
            kv
        }

        fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.st.lock().unwrap()
        }

        /// A store holding a snapshot of cluster `c1` with these topics.
        fn holding(topics: &[&str]) -> Self {
            FakeKv::with(Some(ClusterSnapshot {
                cluster_id: "c1".into(),
                topics: topics.iter().map(|n| topic(n)).collect(),
                ..Default::default()
            }))
        }

        /// A copy, for assertions (the lock is not reentrant).
        fn state(&self) -> FakeState {
            self.st().clone()
        }

        fn stored(&self) -> ClusterSnapshot {
            decode(self.state().value.as_deref().unwrap()).unwrap()
        }
    }

    fn topic(name: &str) -> TopicConfig {
        TopicConfig {
            name: name.into(),
            topic_id: vec![1; 16],
            partitions: 1,
            ..Default::default()
        }
    }

    fn names(s: &ClusterSnapshot) -> Vec<&str> {
        s.topics.iter().map(|t| t.name.as_str()).collect()
    }

    impl SnapshotKv for FakeKv {
        async fn get_snapshot(&self) -> Result<Option<(Vec<u8>, i64)>, etcd_client::Error> {
            let mut st = self.st();
            st.gets += 1;
            if let Some(e) = st.fail {
                return Err(etcd_client::Error::InvalidArgs(e.into()));
            }
            let seen = st.value.clone().map(|v| (v, st.mod_revision));
            if st.interfere > 0 {
                st.interfere -= 1;
                let mut other = st
                    .value
                    .as_deref()
                    .map(|v| decode(v).unwrap())
                    .unwrap_or_default();
                other.cluster_id = "theirs".into();
                other.topics.push(topic(&format!("other-{}", st.gets)));
                st.put(other.encode_to_vec());
            }
            Ok(seen)
        }

        async fn put_snapshot_if(
            &self,
            revision: i64,
            value: Vec<u8>,
            ops: Vec<TxnOp>,
        ) -> Result<Option<i64>, etcd_client::Error> {
            let mut st = self.st();
            st.txns += 1;
            // A key that does not exist has mod revision 0.
            let current = if st.value.is_some() {
                st.mod_revision
            } else {
                0
            };
            if current != revision {
                return Ok(None);
            }
            st.last_ops = ops.len();
            Ok(Some(st.put(value)))
        }
    }

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Snapshot(#[from] SnapshotError),
        #[error("topic {0} exists")]
        Exists(String),
    }

    fn snapshots(kv: FakeKv) -> Snapshots<FakeKv> {
        Snapshots::new(kv, Duration::from_secs(5))
    }

    /// A topic create through the loop (its change refuses an existing name):
    /// the result, and how many times the change ran.
    async fn create(
        s: &Snapshots<FakeKv>,
        name: &'static str,
    ) -> (Result<Updated<()>, TestError>, usize) {
        let mut calls = 0;
        let r = s
            .update("create topic", |snap| {
                calls += 1;
                if snap.topics.iter().any(|t| t.name == name) {
                    return Err(TestError::Exists(name.into()));
                }
                snap.topics.push(topic(name));
                let config = TxnOp::put(keys::topic_config(name), vec![], None);
                Ok(Change::Write(vec![config], ()))
            })
            .await;
        (r, calls)
    }

    #[tokio::test]
    async fn the_first_write_creates_the_snapshot_with_a_cluster_id() {
        let s = snapshots(FakeKv::with(None));
        let (u, calls) = create(&s, "a").await;
        let u = u.unwrap();
        assert!(u.written);
        assert_eq!((calls, u.revision), (1, 1));
        assert!(u.snapshot.cluster_id.starts_with("kafscale-"));
        assert_eq!(s.kv.stored(), u.snapshot);
        assert_eq!(
            s.kv.state().last_ops,
            1,
            "the topic's config key goes along"
        );
        assert_eq!(s.read().await.unwrap(), (u.snapshot, 1));
    }

    #[tokio::test]
    async fn a_lost_compare_applies_the_change_again_to_the_fresh_snapshot() {
        let kv = FakeKv::holding(&[]);
        kv.st().interfere = 3;
        let s = snapshots(kv);
        let (u, calls) = create(&s, "a").await;
        let u = u.unwrap();
        assert_eq!(calls, 4);
        assert_eq!((s.kv.state().gets, s.kv.state().txns), (4, 4));
        // Nobody's topic is lost, and the other writer's cluster id is kept.
        assert_eq!(names(&u.snapshot), ["other-1", "other-2", "other-3", "a"]);
        assert_eq!(u.snapshot.cluster_id, "theirs");
        assert_eq!(
            (s.kv.stored(), s.kv.state().revision),
            (u.snapshot, u.revision)
        );
    }

    #[tokio::test]
    async fn a_snapshot_that_keeps_changing_gives_up_after_max_attempts() {
        let kv = FakeKv::with(None);
        kv.st().interfere = usize::MAX;
        let s = snapshots(kv);
        let (e, calls) = create(&s, "a").await;
        let e = e.unwrap_err();
        assert!(matches!(
            e,
            TestError::Snapshot(SnapshotError::Contended {
                what: "create topic",
                attempts: MAX_CAS_ATTEMPTS
            })
        ));
        assert_eq!(
            (calls, s.kv.state().txns),
            (MAX_CAS_ATTEMPTS, MAX_CAS_ATTEMPTS)
        );
        assert!(!names(&s.kv.stored()).contains(&"a"));
        assert_eq!(
            e.to_string(),
            "etcd create topic: the snapshot kept changing under 32 attempts"
        );
    }

    #[tokio::test]
    async fn a_refused_change_writes_nothing_even_after_a_conflict() {
        let kv = FakeKv::holding(&["b"]);
        let s = snapshots(kv);
        let (e, calls) = create(&s, "b").await;
        let e = e.unwrap_err();
        assert!(matches!(e, TestError::Exists(n) if n == "b"));
        assert_eq!((calls, s.kv.state().txns, s.kv.state().revision), (1, 0, 1));

        // The name is taken by another writer between our read and our write:
        // the retry sees it and refuses (a name is created only once).
        s.kv.st().interfere = 1;
        let (e, calls) = create(&s, "other-2").await;
        let e = e.unwrap_err();
        assert!(matches!(e, TestError::Exists(n) if n == "other-2"));
        assert_eq!((calls, s.kv.state().txns), (2, 1));
        assert_eq!(names(&s.kv.stored()), ["b", "other-2"]);
    }

    #[tokio::test]
    async fn keep_writes_nothing_and_reports_the_read_revision() {
        let kv = FakeKv::holding(&["a"]);
        kv.st().revision = 7;
        let s = snapshots(kv);
        let u = s
            .update("put topic", |snap| {
                Ok::<_, SnapshotError>(Change::Keep(snap.topics.len()))
            })
            .await
            .unwrap();
        assert_eq!((u.written, u.revision, u.value), (false, 1, 1));
        assert_eq!((s.kv.state().txns, s.kv.state().revision), (0, 7));
    }

    #[tokio::test]
    async fn etcd_errors_corrupt_values_and_deadlines_are_typed() {
        let kv = FakeKv::default();
        kv.st().fail = Some("boom");
        let e = snapshots(kv).read().await.unwrap_err();
        assert!(matches!(
            e,
            SnapshotError::Etcd {
                what: "get snapshot",
                ..
            }
        ));
        assert_eq!(e.to_string(), "etcd get snapshot: invalid arguments: boom");

        let kv = FakeKv::default();
        kv.st().put(vec![0xff, 0xff, 0xff]);
        let s = snapshots(kv);
        let e = s
            .update("init snapshot", |_| {
                Ok::<_, SnapshotError>(Change::Write(vec![], ()))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SnapshotError::Corrupt { key, .. } if key == keys::SNAPSHOT),
            "{e}"
        );
        assert_eq!(s.kv.state().txns, 0);

        struct Silent;
        impl SnapshotKv for Silent {
            async fn get_snapshot(&self) -> Result<Option<(Vec<u8>, i64)>, etcd_client::Error> {
                std::future::pending().await
            }
            async fn put_snapshot_if(
                &self,
                _: i64,
                _: Vec<u8>,
                _: Vec<TxnOp>,
            ) -> Result<Option<i64>, etcd_client::Error> {
                std::future::pending().await
            }
        }
        let e = Snapshots::new(Silent, Duration::from_millis(20))
            .read()
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "etcd get snapshot: no answer within 20ms");
    }

    #[test]
    fn a_bad_topic_id_is_corruption() {
        let mut t = topic("t");
        assert_eq!(topic_id(&t).unwrap(), Uuid::from_bytes([1; 16]));
        t.topic_id = vec![1, 2, 3];
        let e = topic_id(&t).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("etcd key /kafscale/metadata/snapshot: topic t: "));
    }
}
