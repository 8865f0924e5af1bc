//! The embedded metadata store, for a single broker (clusters use etcd).
//!
//! Topics: one JSON document, `metadata.json`, replaced atomically (write, fsync,
//! rename, fsync the directory) on every change.
//!
//! Groups: two small files per group under `groups/`, `{name}.meta.json` (members,
//! generation, assignment) and `{name}.offsets.json` (every committed offset of the
//! group), each replaced atomically the same way.
//!
//! Security records (SCRAM credentials, ACLs): one JSON document, `security.json`
//! (key → base64 value), replaced atomically on every change. A commit rewrites only its own
//! group's offsets, so the cost of a commit grows with the group's partitions, not
//! with the number of groups. Writes of one group are serialised; different groups
//! write in parallel.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{
    ClusterState, GroupMeta, MetaError, MetadataStore, OffsetMeta, StoredGroup, TopicMeta,
};

pub struct EmbeddedStore {
    path: PathBuf,
    groups_dir: PathBuf,
    /// `{topic id}-{partition}.json`: log starts moved by DeleteRecords (the
    /// segments alone cannot tell an offset inside a segment).
    partitions_dir: PathBuf,
    // Serialises read-modify-write cycles of the file; only metadata changes take it.
    lock: Mutex<()>,
    /// Per group: its committed offsets as on disk (filled on first use), behind a
    /// lock that serialises that group's file writes.
    groups: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<OffsetsFile>>>>>,
    security_path: PathBuf,
    /// The security records as on disk (read at open), and their watchers; the
    /// sender's lock serialises writes of the file.
    security: Mutex<tokio::sync::watch::Sender<super::SecurityRecords>>,
}

/// `security.json`: key → value in base64.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SecurityFile {
    records: BTreeMap<String, String>,
}

fn read_security(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, MetaError> {
    let file: SecurityFile = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| corrupt(path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SecurityFile::default(),
        Err(e) => return Err(e.into()),
    };
    file.records
        .into_iter()
        .map(|(k, v)| match super::b64::decode(&v) {
            Some(v) => Ok((k, v)),
            None => Err(corrupt(path, "a value is not base64")),
        })
        .collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OffsetsFile {
    group_id: String,
    offsets: Vec<StoredOffset>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredOffset {
    topic: String,
    partition: i32,
    #[serde(flatten)]
    meta: OffsetMeta,
}

/// A partition's log start as DeleteRecords left it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct LogStartFile {
    log_start: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetaFile {
    group_id: String,
    meta: GroupMeta,
}

const META_SUFFIX: &str = ".meta.json";
const OFFSETS_SUFFIX: &str = ".offsets.json";

/// A file-name-safe, unique stem for a group id: safe bytes kept, others as `%XX`,
/// and long ids shortened with a hash. The files also hold the real id, so the name
/// never has to be decoded.
fn file_stem(group: &str) -> String {
    let mut s = String::new();
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.len() > 160 {
        let h1 = crc32c::crc32c(group.as_bytes());
        let h2 = crc32c::crc32c_append(0x9e37_79b9, group.as_bytes());
        s.truncate(120);
        s.push_str(&format!("~{h1:08x}{h2:08x}"));
    }
    // A leading '%' or '-' is fine for the file system; an empty id needs a name.
    format!("g{s}")
}

/// Writes `body` to `path` atomically and durably: a crash leaves the old or the new
/// content, never a mix, and the new content is on disk when this returns.
fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(format!("{}: {e}", path.display()))
}

/// Runs blocking file work off the I/O runtime's async threads, so an fsync does not
/// hold up object-store calls.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, MetaError> + Send + 'static,
) -> Result<R, MetaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MetaError::Io(std::io::Error::other(e.to_string())))?
}

impl EmbeddedStore {
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir)?;
        let groups_dir = dir.join("groups");
        std::fs::create_dir_all(&groups_dir)?;
        let partitions_dir = dir.join("partitions");
        std::fs::create_dir_all(&partitions_dir)?;
        let security_path = dir.join("security.json");
        let records = read_security(&security_path)?;
        Ok(EmbeddedStore {
            path: dir.join("metadata.json"),
            groups_dir,
            partitions_dir,
            lock: Mutex::new(()),
            groups: std::sync::Mutex::new(HashMap::new()),
            security_path,
            security: Mutex::new(tokio::sync::watch::channel(Arc::new(records)).0),
        })
    }

    fn log_start_path(&self, topic_id: uuid::Uuid, partition: i32) -> PathBuf {
        self.partitions_dir
            .join(format!("{topic_id}-{partition}.json"))
    }

    fn compaction_path(&self, topic_id: uuid::Uuid, partition: i32) -> PathBuf {
        self.partitions_dir
            .join(format!("{topic_id}-{partition}.compaction.json"))
    }

    fn group_slot(&self, group: &str) -> Arc<Mutex<Option<OffsetsFile>>> {
        let mut g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(group.to_string()).or_default().clone()
    }

    fn group_path(&self, group: &str, suffix: &str) -> PathBuf {
        self.groups_dir
            .join(format!("{}{suffix}", file_stem(group)))
    }

    fn read_offsets(path: &Path, group: &str) -> Result<OffsetsFile, MetaError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| corrupt(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OffsetsFile {
                group_id: group.to_string(),
                offsets: Vec::new(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to a group's offsets and rewrites its offsets file; the
    /// cache follows the file, also when the write fails.
    async fn update_offsets(
        &self,
        group: &str,
        change: impl FnOnce(&mut BTreeMap<(String, i32), OffsetMeta>),
    ) -> Result<(), MetaError> {
        let slot = self.group_slot(group);
        let mut cached = slot.lock().await;
        let path = self.group_path(group, OFFSETS_SUFFIX);
        let file = match cached.take() {
            Some(f) => f,
            None => {
                let (p, g) = (path.clone(), group.to_string());
                blocking(move || Self::read_offsets(&p, &g)).await?
            }
        };
        let before = file.clone();
        let mut all: BTreeMap<(String, i32), OffsetMeta> = file
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.meta))
            .collect();
        change(&mut all);
        let next = OffsetsFile {
            group_id: file.group_id,
            offsets: all
                .into_iter()
                .map(|((topic, partition), meta)| StoredOffset {
                    topic,
                    partition,
                    meta,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&next).map_err(|e| corrupt(&path, e))?;
        let res = blocking(move || Ok(write_atomic(&path, &body)?)).await;
        *cached = Some(if res.is_ok() { next } else { before });
        res
    }

    fn load_groups_blocking(dir: &Path) -> Result<Vec<StoredGroup>, MetaError> {
        let mut groups: BTreeMap<String, StoredGroup> = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                // A write the process did not finish: the previous file is intact.
                remove_if_exists(&path)?;
            } else if name.ends_with(META_SUFFIX) {
                let f: MetaFile = serde_json::from_slice(&std::fs::read(&path)?)
                    .map_err(|e| corrupt(&path, e))?;
                let g = groups.entry(f.group_id.clone()).or_default();
                g.group_id = f.group_id;
                g.meta = Some(f.meta);
            } else if name.ends_with(OFFSETS_SUFFIX) {
                let f: OffsetsFile = serde_json::from_slice(&std::fs::read(&path)?)
                    .map_err(|e| corrupt(&path, e))?;
                let g = groups.entry(f.group_id.clone()).or_default();
                g.group_id = f.group_id;
                g.offsets = f
                    .offsets
                    .into_iter()
                    .map(|o| (o.topic, o.partition, o.meta))
                    .collect();
            }
        }
        Ok(groups.into_values().collect())
    }

    fn read(&self) -> Result<ClusterState, MetaError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| MetaError::Corrupt(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterState::default()),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, state: &ClusterState) -> Result<(), MetaError> {
        use std::io::Write;
        let tmp = self.path.with_extension("json.tmp");
        let body =
            serde_json::to_vec_pretty(state).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    async fn update<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ClusterState) -> Result<R, MetaError> + Send + 'static,
    ) -> Result<R, MetaError> {
        let _g = self.lock.lock().await;
        let mut state = self.read()?;
        let r = f(&mut state)?;
        state.revision += 1;
        self.write(&state)?;
        Ok(r)
    }
}

#[async_trait::async_trait]
impl MetadataStore for EmbeddedStore {
    async fn load(&self) -> Result<ClusterState, MetaError> {
        let _g = self.lock.lock().await;
        let mut state = self.read()?;
        if state.cluster_id.is_empty() {
            state.cluster_id = format!("kafscale-{}", uuid::Uuid::new_v4().simple());
            self.write(&state)?;
        }
        Ok(state)
    }

    async fn create_topic(&self, topic: TopicMeta) -> Result<ClusterState, MetaError> {
        let mut state = self
            .update(move |s| {
                if s.topics.iter().any(|t| t.name == topic.name) {
                    return Err(MetaError::TopicExists(topic.name));
                }
                s.topics.push(topic);
                Ok(s.clone())
            })
            .await?;
        // The clone was taken before `update` counted the change.
        state.revision += 1;
        Ok(state)
    }

    async fn update_topic(&self, topic: TopicMeta) -> Result<ClusterState, MetaError> {
        let mut state = self
            .update(move |s| {
                match s
                    .topics
                    .iter_mut()
                    .find(|t| t.name == topic.name && !t.deleting)
                {
                    Some(t) => {
                        *t = topic;
                        Ok(s.clone())
                    }
                    None => Err(MetaError::UnknownTopic(topic.name)),
                }
            })
            .await?;
        // The clone was taken before `update` counted the change.
        state.revision += 1;
        Ok(state)
    }

    async fn mark_deleting(&self, name: &str) -> Result<(ClusterState, uuid::Uuid), MetaError> {
        let name = name.to_string();
        let (mut state, id) = self
            .update(
                move |s| match s.topics.iter_mut().find(|t| t.name == name) {
                    Some(t) => {
                        t.deleting = true;
                        let id = t.id;
                        Ok((s.clone(), id))
                    }
                    None => Err(MetaError::UnknownTopic(name)),
                },
            )
            .await?;
        state.revision += 1;
        Ok((state, id))
    }

    async fn delete_topic(&self, name: &str, id: uuid::Uuid) -> Result<ClusterState, MetaError> {
        let dir = self.partitions_dir.clone();
        let prefix = format!("{id}-");
        blocking(move || {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
                {
                    remove_if_exists(&path)?;
                }
            }
            Ok(())
        })
        .await?;
        let name = name.to_string();
        let mut state = self
            .update(
                move |s| match s.topics.iter().position(|t| t.name == name && t.id == id) {
                    Some(i) => {
                        s.topics.remove(i);
                        Ok(s.clone())
                    }
                    None => Err(MetaError::UnknownTopic(name)),
                },
            )
            .await?;
        state.revision += 1;
        Ok(state)
    }

    /// Only this broker writes the file, and it publishes its own changes, so
    /// there is never anything to watch.
    async fn watch(&self, _revision: i64) -> Result<super::SnapshotStream, MetaError> {
        use futures::StreamExt;
        Ok(futures::stream::pending().boxed())
    }

    fn tracks_partition_state(&self) -> bool {
        false
    }

    /// Next offsets are not kept: a single broker recovers them from the segment
    /// footers. Only a log start moved by DeleteRecords is (`next_offset` 0).
    async fn partition_state(
        &self,
        _topic: &str,
        topic_id: uuid::Uuid,
        partition: i32,
    ) -> Result<Option<super::Committed>, MetaError> {
        let path = self.log_start_path(topic_id, partition);
        blocking(move || match std::fs::read(&path) {
            Ok(body) => {
                let f: LogStartFile =
                    serde_json::from_slice(&body).map_err(|e| corrupt(&path, e))?;
                Ok(Some(super::Committed {
                    next_offset: 0,
                    log_start: f.log_start,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Keeps the log start only (the upload path does not call this because
    /// `tracks_partition_state` is false; DeleteRecords does).
    async fn commit_partition(
        &self,
        _topic: &str,
        topic_id: uuid::Uuid,
        partition: i32,
        _next_offset: i64,
        log_start: i64,
        _claim: super::Claim,
    ) -> Result<(), MetaError> {
        let path = self.log_start_path(topic_id, partition);
        let body =
            serde_json::to_vec(&LogStartFile { log_start }).map_err(|e| corrupt(&path, e))?;
        blocking(move || Ok(write_atomic(&path, &body)?)).await
    }

    async fn compaction(
        &self,
        _topic: &str,
        topic_id: uuid::Uuid,
        partition: i32,
    ) -> Result<Option<super::Manifest>, MetaError> {
        let path = self.compaction_path(topic_id, partition);
        blocking(move || match std::fs::read(&path) {
            Ok(body) => Ok(Some(
                serde_json::from_slice(&body).map_err(|e| corrupt(&path, e))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// The only broker owns every partition: nothing to fence.
    async fn commit_compaction(
        &self,
        _topic: &str,
        topic_id: uuid::Uuid,
        partition: i32,
        manifest: &super::Manifest,
        _claim: super::Claim,
    ) -> Result<(), MetaError> {
        let path = self.compaction_path(topic_id, partition);
        let body = serde_json::to_vec(manifest).map_err(|e| corrupt(&path, e))?;
        blocking(move || Ok(write_atomic(&path, &body)?)).await
    }

    async fn load_groups(&self) -> Result<Vec<StoredGroup>, MetaError> {
        let dir = self.groups_dir.clone();
        blocking(move || Self::load_groups_blocking(&dir)).await
    }

    async fn put_group(
        &self,
        group: &str,
        meta: GroupMeta,
        _claim: super::Claim,
    ) -> Result<(), MetaError> {
        let slot = self.group_slot(group);
        let _g = slot.lock().await;
        let path = self.group_path(group, META_SUFFIX);
        let body = serde_json::to_vec(&MetaFile {
            group_id: group.to_string(),
            meta,
        })
        .map_err(|e| corrupt(&path, e))?;
        blocking(move || Ok(write_atomic(&path, &body)?)).await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, OffsetMeta)>,
        _claim: super::Claim,
    ) -> Result<(), MetaError> {
        self.update_offsets(group, move |all| {
            for (topic, partition, meta) in offsets {
                all.insert((topic, partition), meta);
            }
        })
        .await
    }

    async fn delete_topic_offsets(
        &self,
        group: &str,
        topic: &str,
        _claim: super::Claim,
    ) -> Result<(), MetaError> {
        let topic = topic.to_string();
        self.update_offsets(group, move |all| all.retain(|(t, _), _| *t != topic))
            .await
    }

    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
        _claim: super::Claim,
    ) -> Result<(), MetaError> {
        self.update_offsets(group, move |all| {
            for key in &partitions {
                all.remove(key);
            }
        })
        .await
    }

    async fn delete_group(&self, group: &str, _claim: super::Claim) -> Result<(), MetaError> {
        let slot = self.group_slot(group);
        let mut cached = slot.lock().await;
        let meta = self.group_path(group, META_SUFFIX);
        let offsets = self.group_path(group, OFFSETS_SUFFIX);
        blocking(move || {
            remove_if_exists(&meta)?;
            remove_if_exists(&offsets)?;
            Ok(sync_parent(&meta)?)
        })
        .await?;
        *cached = None;
        Ok(())
    }

    async fn watch_security(&self) -> Result<super::SecurityStream, MetaError> {
        use futures::StreamExt;
        let rx = self.security.lock().await.subscribe();
        // The current set first (marked changed), then one item per change.
        let mut rx = rx;
        rx.mark_changed();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let v = rx.borrow_and_update().clone();
            Some((v, rx))
        })
        .boxed())
    }

    async fn put_security(&self, changes: Vec<(String, Option<Vec<u8>>)>) -> Result<(), MetaError> {
        let tx = self.security.lock().await;
        let mut records = (**tx.borrow()).clone();
        for (k, v) in changes {
            match v {
                Some(v) => records.insert(k, v),
                None => records.remove(&k),
            };
        }
        let file = SecurityFile {
            records: records
                .iter()
                .map(|(k, v)| (k.clone(), super::b64::encode(v)))
                .collect(),
        };
        let body =
            serde_json::to_vec_pretty(&file).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let path = self.security_path.clone();
        blocking(move || Ok(write_atomic(&path, &body)?)).await?;
        tx.send_replace(Arc::new(records));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn topics_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("kafscale-meta-{}", uuid::Uuid::new_v4()));
        let s = EmbeddedStore::open(&dir).unwrap();
        let id = s.load().await.unwrap().cluster_id;
        let t = TopicMeta {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 4,
            configs: Default::default(),
            deleting: false,
        };
        s.create_topic(t.clone()).await.unwrap();
        assert!(matches!(
            s.create_topic(t.clone()).await,
            Err(MetaError::TopicExists(_))
        ));
        let mut t = t;
        t.partitions = 6;
        t.configs.insert("retention.ms".into(), "1000".into());
        s.update_topic(t.clone()).await.unwrap();
        let mut ghost = t.clone();
        ghost.name = "ghost".into();
        assert!(matches!(
            s.update_topic(ghost).await,
            Err(MetaError::UnknownTopic(_))
        ));
        let s2 = EmbeddedStore::open(&dir).unwrap();
        let st = s2.load().await.unwrap();
        assert_eq!(st.cluster_id, id);
        assert_eq!(st.topics, vec![t.clone()]);
        let (marked, id) = s2.mark_deleting("t").await.unwrap();
        assert!(marked.topics[0].deleting && id == t.id);
        assert!(
            EmbeddedStore::open(&dir)
                .unwrap()
                .load()
                .await
                .unwrap()
                .topics[0]
                .deleting
        );
        s2.delete_topic("t", id).await.unwrap();
        assert!(EmbeddedStore::open(&dir)
            .unwrap()
            .load()
            .await
            .unwrap()
            .topics
            .is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    fn om(offset: i64, metadata: &str) -> OffsetMeta {
        OffsetMeta {
            offset,
            leader_epoch: -1,
            metadata: Some(metadata.into()),
            commit_ms: 1,
        }
    }

    /// A broker alone writes without a claim.
    const C: crate::metadata::Claim = crate::metadata::Claim { token: 0, epoch: 0 };

    #[tokio::test]
    async fn groups_and_offsets_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("kafscale-meta-{}", uuid::Uuid::new_v4()));
        let s = EmbeddedStore::open(&dir).unwrap();
        let odd = "a/b..c d";
        s.commit_offsets(
            odd,
            vec![("t".into(), 0, om(5, "m0")), ("t".into(), 1, om(7, ""))],
            C,
        )
        .await
        .unwrap();
        s.commit_offsets(odd, vec![("t".into(), 0, om(9, "m1"))], C)
            .await
            .unwrap();
        let meta = GroupMeta {
            protocol_type: "consumer".into(),
            protocol: Some("range".into()),
            generation: 3,
            leader: Some("m-1".into()),
            members: vec![crate::metadata::StoredMember {
                member_id: "m-1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 6000,
                rebalance_timeout_ms: 6000,
                subscription: vec![0, 1, 2],
                assignment: vec![3, 4, 255],
            }],
            consumer: Some(crate::metadata::sample_consumer_meta()),
        };
        s.put_group("g2", meta.clone(), C).await.unwrap();
        s.commit_offsets("gone", vec![("t".into(), 0, om(1, ""))], C)
            .await
            .unwrap();
        s.delete_group("gone", C).await.unwrap();
        let long = "x".repeat(300);
        s.commit_offsets(&long, vec![("t".into(), 0, om(2, ""))], C)
            .await
            .unwrap();

        let s2 = EmbeddedStore::open(&dir).unwrap();
        let groups = s2.load_groups().await.unwrap();
        let by: HashMap<_, _> = groups.iter().map(|g| (g.group_id.as_str(), g)).collect();
        assert_eq!(by.len(), 3, "{groups:?}");
        assert_eq!(
            by[odd].offsets,
            vec![("t".into(), 0, om(9, "m1")), ("t".into(), 1, om(7, ""))]
        );
        assert_eq!(by["g2"].meta.as_ref(), Some(&meta));
        assert_eq!(by[long.as_str()].offsets.len(), 1);
        // A commit after reopening merges with what is on disk.
        s2.commit_offsets(odd, vec![("u".into(), 0, om(1, ""))], C)
            .await
            .unwrap();
        let again = EmbeddedStore::open(&dir)
            .unwrap()
            .load_groups()
            .await
            .unwrap();
        let g = again.iter().find(|g| g.group_id == odd).unwrap();
        assert_eq!(g.offsets.len(), 3);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn security_records_survive_reopen_and_are_watched() {
        use futures::StreamExt;
        let dir = std::env::temp_dir().join(format!("kafscale-sec-{}", uuid::Uuid::new_v4()));
        let store = EmbeddedStore::open(&dir).unwrap();
        let mut w = store.watch_security().await.unwrap();
        assert!(w.next().await.unwrap().is_empty());
        store
            .put_security(vec![
                ("scram/a/SCRAM-SHA-256".into(), Some(vec![1, 2, 3])),
                ("scram/b/SCRAM-SHA-256".into(), Some(vec![])),
            ])
            .await
            .unwrap();
        let seen = w.next().await.unwrap();
        assert_eq!(seen.get("scram/a/SCRAM-SHA-256"), Some(&vec![1, 2, 3]));
        store
            .put_security(vec![("scram/b/SCRAM-SHA-256".into(), None)])
            .await
            .unwrap();
        assert_eq!(w.next().await.unwrap().len(), 1);
        drop(store);
        let again = EmbeddedStore::open(&dir).unwrap();
        let mut w = again.watch_security().await.unwrap();
        let seen = w.next().await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen.get("scram/a/SCRAM-SHA-256"), Some(&vec![1, 2, 3]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(file_stem(""), "g");
        assert_eq!(file_stem("a/b"), "ga%2Fb");
        assert_ne!(file_stem("a.b"), file_stem("a%2Eb"));
        let a = file_stem(&format!("{}a", "x".repeat(300)));
        let b = file_stem(&format!("{}b", "x".repeat(300)));
        assert!(a.len() < 200 && a != b);
    }
}
