//! The embedded metadata store: one JSON document in the data directory, replaced
//! atomically (write, fsync, rename, fsync the directory) on every change. It is
//! for a single broker; clusters use etcd.

use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use super::{ClusterState, MetaError, MetadataStore, TopicMeta};

pub struct EmbeddedStore {
    path: PathBuf,
    // Serialises read-modify-write cycles of the file; only metadata changes take it.
    lock: Mutex<()>,
}

impl EmbeddedStore {
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir)?;
        Ok(EmbeddedStore {
            path: dir.join("metadata.json"),
            lock: Mutex::new(()),
        })
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

    async fn create_topic(&self, topic: TopicMeta) -> Result<(), MetaError> {
        self.update(move |s| {
            if s.topics.iter().any(|t| t.name == topic.name) {
                return Err(MetaError::TopicExists(topic.name));
            }
            s.topics.push(topic);
            Ok(())
        })
        .await
    }

    async fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetaError> {
        let name = name.to_string();
        self.update(
            move |s| match s.topics.iter().position(|t| t.name == name) {
                Some(i) => Ok(s.topics.remove(i)),
                None => Err(MetaError::UnknownTopic(name)),
            },
        )
        .await
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
        };
        s.create_topic(t.clone()).await.unwrap();
        assert!(matches!(
            s.create_topic(t.clone()).await,
            Err(MetaError::TopicExists(_))
        ));
        let s2 = EmbeddedStore::open(&dir).unwrap();
        let st = s2.load().await.unwrap();
        assert_eq!(st.cluster_id, id);
        assert_eq!(st.topics, vec![t]);
        s2.delete_topic("t").await.unwrap();
        assert!(EmbeddedStore::open(&dir)
            .unwrap()
            .load()
            .await
            .unwrap()
            .topics
            .is_empty());
        std::fs::remove_dir_all(dir).ok();
    }
}
