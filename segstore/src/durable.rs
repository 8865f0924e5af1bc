//! A local directory that keeps what it acknowledged. `object_store`'s
//! `LocalFileSystem` writes a staging file and links or renames it into place,
//! but never calls fsync: after a power loss an acknowledged segment can be
//! missing or hold zeroes. This wrapper fsyncs the file and the directory that
//! names it before a PUT returns (and, the first time a directory is seen, the
//! directories above it up to the store's root, so that a new topic's or
//! partition's directory survives too). The broker answers `acks=all` only after
//! the PUT returned, so an acknowledged segment is on disk.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

#[derive(Debug)]
pub struct SyncedLocalStore {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
    /// Directories whose own entry (in their parent) is known to be on disk.
    synced_dirs: Mutex<HashSet<PathBuf>>,
}

impl SyncedLocalStore {
    pub fn new(inner: LocalFileSystem, root: PathBuf) -> Self {
        SyncedLocalStore {
            inner: Arc::new(inner),
            root,
            synced_dirs: Mutex::new(HashSet::new()),
        }
    }

    /// fsyncs the object at `location` and the directories that name it, on a
    /// blocking thread (the I/O runtime's workers must not block).
    async fn sync(&self, location: &Path) -> object_store::Result<()> {
        let path = self.inner.path_to_filesystem(location)?;
        let this = SyncHandle {
            root: self.root.clone(),
            dirs: self.synced_dirs_snapshot(),
        };
        let synced = tokio::task::spawn_blocking(move || this.run(&path)).await;
        match synced {
            Ok(Ok(dirs)) => {
                self.synced_dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(dirs);
                Ok(())
            }
            Ok(Err(e)) => Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            }),
            Err(e) => Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            }),
        }
    }

    fn synced_dirs_snapshot(&self) -> HashSet<PathBuf> {
        self.synced_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a blocking fsync needs, moved to the blocking thread.
struct SyncHandle {
    root: PathBuf,
    dirs: HashSet<PathBuf>,
}

impl SyncHandle {
    /// fsyncs `file` and the directories that name it; returns the directories
    /// now known durable.
    fn run(self, file: &FsPath) -> std::io::Result<Vec<PathBuf>> {
        std::fs::File::open(file)?.sync_all()?;
        let mut done = Vec::new();
        let mut dir = file.parent();
        let mut own = true;
        while let Some(d) = dir {
            // The file's own directory always (the new name is in it); those
            // above only until one whose entry is known to be on disk.
            if !own && self.dirs.contains(d) {
                break;
            }
            std::fs::File::open(d)?.sync_all()?;
            done.push(d.to_path_buf());
            if d == self.root {
                break;
            }
            own = false;
            dir = d.parent();
        }
        Ok(done)
    }
}

impl fmt::Display for SyncedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Synced({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for SyncedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(r)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Segments are written with single PUTs; multipart is passed through.
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.inner.get_range(location, range).await
    }
    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.inner.head(location).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await?;
        self.sync(to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await?;
        self.sync(to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_are_synced_and_new_directories_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let s = SyncedLocalStore::new(
            LocalFileSystem::new_with_prefix(&root).unwrap(),
            root.clone(),
        );
        let p = Path::from("ns/t/0/segment-1.kfs");
        s.put_opts(
            &p,
            PutPayload::from_static(b"data"),
            PutOptions {
                mode: object_store::PutMode::Create,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read(root.join("ns/t/0/segment-1.kfs")).unwrap(),
            b"data"
        );
        let dirs = s.synced_dirs_snapshot();
        for d in ["ns/t/0", "ns/t", "ns"] {
            assert!(dirs.contains(&root.join(d)), "{d} synced");
        }
        assert_eq!(
            s.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"data"[..]
        );
    }
}
