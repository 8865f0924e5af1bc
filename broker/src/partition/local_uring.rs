//! Segment uploads to the local directory store on the shard's own io_uring
//! (`KAFSCALE_LOCAL_IO=uring`), instead of handing each PUT to the I/O
//! runtime's tokio threads (`thread`, through `SyncedLocalStore`).
//!
//! The files and guarantees are the same as the thread path's, so either mode
//! reads what the other wrote and recovery does not care which one ran:
//! - the object is written to a staging name (`<name>#<suffix>`, which
//!   `object_store`'s `LocalFileSystem` never lists) and fdatasync'd;
//! - it gets its final name by a hard link, which fails if the name exists
//!   (the create-only rule of `SegmentStore::put_object`: an existing object
//!   with our bytes is our own earlier attempt, other bytes are a conflict);
//! - the directory that names it is fsync'd (and, the first time a directory
//!   is seen, those above it up to the store's root) before the PUT counts.
//!
//! What differs: the data write and both fdatasyncs are io_uring requests of
//! the shard's executor, with no thread hop; the `.kfs` and `.index` share one
//! directory fsync. The link, the staging name's removal and creating a new
//! directory are plain system calls on the shard: they touch metadata only.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use glommio::io::{Directory, OpenOptions};
use object_store::local::LocalFileSystem;

use kafscale_segstore::keys::{object_index_path, object_path};
use kafscale_segstore::{SealedSegment, StoreError, StoreStats};

/// What every shard needs to build its writer; built once per broker.
#[derive(Clone)]
pub struct LocalUringConfig {
    /// The store's root, as `LocalFileSystem` resolves it (canonical).
    pub root: PathBuf,
    pub namespace: String,
    pub stats: Arc<StoreStats>,
}

/// A shard's writer of segments into the local directory store.
pub struct LocalUring {
    /// Only for mapping keys to files, exactly as the store reads them.
    fs: LocalFileSystem,
    root: PathBuf,
    namespace: String,
    stats: Arc<StoreStats>,
    /// Directories whose own entry (in their parent) is known to be on disk.
    synced_dirs: RefCell<HashSet<PathBuf>>,
}

/// Staging names must not collide between shards or with an attempt that
/// crashed mid-write: pid and a counter make them unique in one process.
static STAGING: AtomicU64 = AtomicU64::new(0);

impl LocalUring {
    pub fn new(cfg: &LocalUringConfig) -> Result<Self, StoreError> {
        let fs = LocalFileSystem::new_with_prefix(&cfg.root)
            .map_err(|e| StoreError::Config(format!("{}: {e}", cfg.root.display())))?;
        Ok(LocalUring {
            fs,
            root: cfg.root.clone(),
            namespace: cfg.namespace.clone(),
            stats: cfg.stats.clone(),
            synced_dirs: RefCell::new(HashSet::new()),
        })
    }

    /// `SegmentStore::put_segment`'s contract, on this shard's io_uring.
    pub async fn put_segment(
        &self,
        topic: &str,
        partition: i32,
        sealed: &SealedSegment,
    ) -> Result<(), StoreError> {
        let base = sealed.segment.base_offset;
        let data = self.file(&object_path(&self.namespace, topic, partition, base, 0))?;
        let index = self.file(&object_index_path(
            &self.namespace,
            topic,
            partition,
            base,
            0,
        ))?;
        let dir = data
            .parent()
            .ok_or_else(|| StoreError::Config(format!("{} has no directory", data.display())))?
            .to_path_buf();
        self.ensure_dir(&dir)?;
        let (kfs, idx) = futures::join!(
            self.write_synced(&data, &sealed.segment.data),
            self.write_synced(&index, &sealed.index),
        );
        let (kfs_staged, idx_staged) = match (self.counted(kfs), self.counted(idx)) {
            (Ok(k), Ok(i)) => (k, i),
            // Whichever was written is of no use without the other.
            (Ok(staged), Err(e)) | (Err(e), Ok(staged)) => {
                remove_quietly(&staged);
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
        };
        let linked = link_create_only(&kfs_staged, &data, &sealed.segment.data).await;
        remove_quietly(&kfs_staged);
        if let Err(e) = linked {
            remove_quietly(&idx_staged);
            return Err(e);
        }
        // The `.kfs` is ours, so the `.index` beside it is ours to write (see
        // `SegmentStore::put_object`): a different one is an orphan of an
        // interrupted upload and is replaced.
        let renamed = std::fs::rename(&idx_staged, &index);
        if renamed.is_err() {
            remove_quietly(&idx_staged);
        }
        renamed.map_err(|e| io_error(&index, e))?;
        self.sync_dirs(&dir).await
    }

    fn file(&self, key: &object_store::path::Path) -> Result<PathBuf, StoreError> {
        self.fs.path_to_filesystem(key).map_err(StoreError::from)
    }

    /// Counts one write as the PUT it stands for, in the store's metrics.
    fn counted<T>(&self, r: (Result<T, StoreError>, Instant)) -> Result<T, StoreError> {
        let (r, started) = r;
        self.stats.record_put(started.elapsed(), r.is_err());
        r
    }

    /// Writes `bytes` to a new staging file beside `path` and fdatasyncs it;
    /// returns the staging file's path.
    async fn write_synced(
        &self,
        path: &Path,
        bytes: &Bytes,
    ) -> (Result<PathBuf, StoreError>, Instant) {
        let started = Instant::now();
        let n = STAGING.fetch_add(1, Ordering::Relaxed);
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!("#{}-{n}", std::process::id()));
        let staged = PathBuf::from(staged);
        let r = async {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .buffered_open(&staged)
                .await
                .map_err(|e| glommio_error(&staged, e))?;
            // glommio takes the buffer by value: one copy of the segment, the
            // price of handing it to the kernel without a thread hop.
            let written = write_all(&f, &staged, bytes).await;
            let synced = match written {
                Ok(()) => f.fdatasync().await.map_err(|e| glommio_error(&staged, e)),
                Err(e) => Err(e),
            };
            let _ = f.close().await;
            if synced.is_err() {
                remove_quietly(&staged);
            }
            synced.map(|()| staged.clone())
        }
        .await;
        (r, started)
    }

    /// Creates `dir` if needed; its entry and those above it are fsync'd by
    /// `sync_dirs` once the objects are in it.
    fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if self.synced_dirs.borrow().contains(dir) {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
    }

    /// fsyncs `dir` (the new names are in it) and, up to the root, those
    /// directories above it not yet known durable.
    async fn sync_dirs(&self, dir: &Path) -> Result<(), StoreError> {
        let mut d = Some(dir);
        let mut own = true;
        while let Some(cur) = d {
            if !own && self.synced_dirs.borrow().contains(cur) {
                break;
            }
            let handle = Directory::open(cur)
                .await
                .map_err(|e| glommio_error(cur, e))?;
            let synced = handle.sync().await.map_err(|e| glommio_error(cur, e));
            let _ = handle.close().await;
            synced?;
            self.synced_dirs.borrow_mut().insert(cur.to_path_buf());
            if cur == self.root {
                break;
            }
            own = false;
            d = cur.parent();
        }
        Ok(())
    }
}

async fn write_all(
    f: &glommio::io::BufferedFile,
    path: &Path,
    bytes: &Bytes,
) -> Result<(), StoreError> {
    let mut pos = 0usize;
    let mut buf = bytes.to_vec();
    while pos < bytes.len() {
        let n = f
            .write_at(buf, pos as u64)
            .await
            .map_err(|e| glommio_error(path, e))?;
        if n == 0 {
            return Err(io_error(path, std::io::ErrorKind::WriteZero.into()));
        }
        pos += n;
        buf = match bytes.get(pos..) {
            Some(rest) if !rest.is_empty() => rest.to_vec(),
            _ => break,
        };
    }
    Ok(())
}

/// Gives `staged` the name `path` unless `path` exists: then Ok if it holds
/// `bytes` (our own earlier attempt), `Conflict` if not.
async fn link_create_only(staged: &Path, path: &Path, bytes: &Bytes) -> Result<(), StoreError> {
    match std::fs::hard_link(staged, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stored = read_file(path).await?;
            if stored == bytes[..] {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    key: path.display().to_string(),
                })
            }
        }
        Err(e) => Err(io_error(path, e)),
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let f = OpenOptions::new()
        .read(true)
        .buffered_open(path)
        .await
        .map_err(|e| glommio_error(path, e))?;
    let size = f.file_size().await.map_err(|e| glommio_error(path, e))?;
    let r = f.read_at(0, size as usize).await;
    let _ = f.close().await;
    let r = r.map_err(|e| glommio_error(path, e))?;
    Ok(r.to_vec())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "removing a staging file failed");
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::LocalFile {
        path: path.display().to_string(),
        source,
    }
}

fn glommio_error(path: &Path, e: glommio::GlommioError<()>) -> StoreError {
    io_error(path, e.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::{build_batch, BatchHeader};
    use kafscale_segstore::{SegmentBuilder, SegmentStore, StoreConfig};

    fn sealed(base: i64, values: &[&str]) -> SealedSegment {
        let mut b = SegmentBuilder::new(base, 7, 256);
        for v in values {
            let raw = build_batch(0, 1, &[v.as_bytes()]);
            let h = BatchHeader::parse(&raw).unwrap();
            b.append(&raw, &h, 0);
        }
        b.finish(10)
    }

    /// Runs `f` on a glommio executor of its own, as a shard would.
    fn on_executor<T: Send + 'static>(
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn segments_written_on_the_shard_read_back_through_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().to_path_buf();
        // The store as the broker builds it (it creates `objects/`).
        let store = kafscale_segstore::build_object_store(&StoreConfig {
            data_dir: data_dir.clone(),
            use_memory: false,
            s3: None,
        })
        .unwrap();
        let root = std::fs::canonicalize(data_dir.join("objects")).unwrap();
        let stats = Arc::new(StoreStats::default());
        let cfg = LocalUringConfig {
            root: root.clone(),
            namespace: "ns".into(),
            stats: stats.clone(),
        };
        let first = sealed(0, &["a", "b", "c"]);
        let second = sealed(3, &["d"]);
        let other = sealed(0, &["someone else's"]);
        let (f, s, o) = (first.clone(), second.clone(), other.clone());
        let results = on_executor(move || {
            Box::pin(async move {
                let w = LocalUring::new(&cfg).unwrap();
                let r1 = w.put_segment("t", 0, &f).await.is_ok();
                let r2 = w.put_segment("t", 0, &s).await.is_ok();
                // A retry of the same PUT (its answer lost) succeeds.
                let again = w.put_segment("t", 0, &f).await.is_ok();
                // Different bytes at an acknowledged offset are refused.
                let conflict = matches!(
                    w.put_segment("t", 0, &o).await,
                    Err(StoreError::Conflict { .. })
                );
                (r1, r2, again, conflict)
            })
        });
        assert_eq!(results, (true, true, true, true));
        // Two objects per successful PUT of a segment, counted as the store's PUTs.
        assert_eq!(stats.snapshot()[0].requests, 8);
        // No staging file is left behind, and the names are the store's own.
        assert_eq!(
            files_under(&root),
            vec![
                "ns/t/0/segment-00000000000000000000.index",
                "ns/t/0/segment-00000000000000000000.kfs",
                "ns/t/0/segment-00000000000000000003.index",
                "ns/t/0/segment-00000000000000000003.kfs",
            ]
        );
        let segs = SegmentStore::new(store, "ns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let list = segs.list_segments("t", 0).await.unwrap();
            assert_eq!(
                list.iter().map(|m| m.base_offset).collect::<Vec<_>>(),
                vec![0, 3]
            );
            let seg = segs.read_segment("t", 0, 0).await.unwrap();
            assert_eq!((seg.base_offset, seg.last_offset), (0, 2));
            assert_eq!(seg.data, first.segment.data);
            let seg = segs.read_segment("t", 0, 3).await.unwrap();
            assert_eq!(seg.data, second.segment.data);
        });
    }

    #[test]
    fn a_stale_index_beside_our_segment_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let dir = root.join("ns/t/0");
        std::fs::create_dir_all(&dir).unwrap();
        // An upload interrupted between its two objects left an `.index` only.
        let index = dir.join("segment-00000000000000000000.index");
        std::fs::write(&index, b"orphan").unwrap();
        let cfg = LocalUringConfig {
            root: root.clone(),
            namespace: "ns".into(),
            stats: Arc::new(StoreStats::default()),
        };
        let seg = sealed(0, &["x"]);
        let want = seg.index.clone();
        let ok = on_executor(move || {
            Box::pin(async move {
                let w = LocalUring::new(&cfg).unwrap();
                w.put_segment("t", 0, &seg).await.is_ok()
            })
        });
        assert!(ok);
        assert_eq!(std::fs::read(&index).unwrap(), want[..]);
    }
}
