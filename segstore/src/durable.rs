//! A local directory that keeps what it acknowledged. `object_store`'s
//! `LocalFileSystem` writes a staging file and links or renames it into place,
//! but never calls fsync: after a power loss an acknowledged segment can be
//! missing or hold zeroes. This wrapper fsyncs the file and the directory that
//! names it before a PUT returns (and, the first time a directory is seen, the
//! directories above it up to the store's root, so that a new topic's or
//! partition's directory survives too). The broker answers `acks=all` only after
//! the PUT returned, so an acknowledged segment is on disk.
//!
//! Create-only PUTs (segments and their indexes) are written with `O_DIRECT`
//! where the filesystem takes it (`direct`): the page-cache copy of every byte
//! was the largest single cost of a broker at saturation (37% of its CPU;
//! docs/benchmarks-ab.md). Other PUTs, and filesystems that refuse `O_DIRECT`
//! (tmpfs before Linux 6.6, some FUSE mounts), go through `LocalFileSystem` and
//! the page cache.

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
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

#[derive(Debug)]
pub struct SyncedLocalStore {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
    /// Directories whose own entry (in their parent) is known to be on disk.
    synced_dirs: Mutex<HashSet<PathBuf>>,
    /// Create-only PUTs are written with `O_DIRECT` (the filesystem under
    /// `root` takes it).
    direct: bool,
}

impl SyncedLocalStore {
    pub fn new(inner: LocalFileSystem, root: PathBuf) -> Self {
        let direct = direct::supported(&root);
        SyncedLocalStore {
            inner: Arc::new(inner),
            root,
            synced_dirs: Mutex::new(HashSet::new()),
            direct,
        }
    }

    /// Whether create-only PUTs bypass the page cache.
    pub fn writes_direct(&self) -> bool {
        self.direct
    }

    /// fsyncs the object at `location` and the directories that name it, on a
    /// blocking thread (the I/O runtime's workers must not block).
    async fn sync(&self, location: &Path) -> object_store::Result<()> {
        let path = self.inner.path_to_filesystem(location)?;
        let this = self.sync_handle(true);
        let synced = tokio::task::spawn_blocking(move || this.run(&path)).await;
        match synced {
            Ok(Ok(dirs)) => {
                self.remember_synced(dirs);
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

    fn sync_handle(&self, file: bool) -> SyncHandle {
        SyncHandle {
            root: self.root.clone(),
            dirs: self
                .synced_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            file,
        }
    }

    fn remember_synced(&self, dirs: Vec<PathBuf>) {
        self.synced_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(dirs);
    }
}

/// What a blocking fsync needs, moved to the blocking thread.
struct SyncHandle {
    root: PathBuf,
    dirs: HashSet<PathBuf>,
    /// The file itself too (false: its data was synced where it was written).
    file: bool,
}

impl SyncHandle {
    /// fsyncs `file` and the directories that name it; returns the directories
    /// now known durable.
    fn run(self, file: &FsPath) -> std::io::Result<Vec<PathBuf>> {
        if self.file {
            std::fs::File::open(file)?.sync_all()?;
        }
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

/// `O_DIRECT` writes of whole objects: staged under a name `LocalFileSystem`
/// never lists (`#` and digits), synced, then linked to their final name (which
/// fails if the name exists: the create-only rule).
/// Whether files under `root` take `O_DIRECT` writes (probed with a file
/// of its own, removed after).
pub fn direct_supported(root: &std::path::Path) -> bool {
    direct::supported(root)
}

/// `O_DIRECT` for `OpenOptionsExt::custom_flags` (0 where there is none).
pub const O_DIRECT: i32 = direct::O_DIRECT;

mod direct {
    use std::cell::RefCell;
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;

    /// The alignment `O_DIRECT` asks of buffers, offsets and lengths (the
    /// largest logical block size in use; 512 on most disks).
    const ALIGN: usize = 4096;

    #[derive(Debug)]
    pub enum Error {
        /// The final name exists (create-only).
        Exists(std::io::Error),
        Io(std::io::Error),
    }

    impl From<std::io::Error> for Error {
        fn from(e: std::io::Error) -> Self {
            Error::Io(e)
        }
    }

    thread_local! {
        /// Reused per I/O thread, so its pages stay resident and warm: copying
        /// into a fresh buffer would cost what the page-cache copy did. Grows to
        /// the largest object written; freed when the blocking thread exits
        /// after its idle timeout.
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    static STAGED: AtomicU64 = AtomicU64::new(0);

    fn open_direct(path: &Path) -> std::io::Result<File> {
        open_new(path, O_DIRECT)
    }

    fn open_new(path: &Path, flags: i32) -> std::io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(flags)
            .open(path)
    }

    /// Turns `O_DIRECT` off on `f`: what follows is written through the page
    /// cache (Linux lets `F_SETFL` change it on an open file).
    fn buffered(f: &File) -> std::io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) & !OFlag::from_bits_truncate(O_DIRECT);
        fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
        Ok(())
    }

    /// Copies the first `buf.len()` bytes of `chunks` into `buf`.
    fn copy_prefix(chunks: &[Bytes], buf: &mut [u8]) {
        let mut at = 0;
        for c in chunks {
            let n = c.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&c[..n]);
            at += n;
            if at == buf.len() {
                break;
            }
        }
    }

    #[cfg(target_os = "linux")]
    pub const O_DIRECT: i32 = libc::O_DIRECT;
    // Never opened with it elsewhere: `supported` says no first.
    #[cfg(not(target_os = "linux"))]
    pub const O_DIRECT: i32 = 0;

    /// Whether files under `root` can be opened with `O_DIRECT` and written
    /// that way (tmpfs refuses at open, others at the first write).
    pub fn supported(root: &Path) -> bool {
        if !cfg!(target_os = "linux") {
            return false;
        }
        let probe = root.join(format!(".direct-probe#{}", std::process::id()));
        let ok = open_direct(&probe)
            .and_then(|mut f| {
                with_aligned(ALIGN, |buf| {
                    buf.fill(0);
                    f.write_all(buf)
                })
            })
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }

    /// Runs `f` on an aligned, writable slice of `len` bytes.
    fn with_aligned<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < len + ALIGN {
                b.resize((len + ALIGN).next_power_of_two(), 0);
            }
            let off = b.as_ptr().align_offset(ALIGN);
            f(&mut b[off..off + len])
        })
    }

    /// Writes `chunks` as the file `path`, which must not exist yet, and syncs
    /// its data; the caller syncs the directories.
    ///
    /// The whole blocks go with `O_DIRECT`; the tail (under one block) with a
    /// buffered write. Padding the tail and cutting the file back instead makes
    /// ext4 read the last block back from the disk, synchronously, to zero what
    /// lies past the new end: a read on the acknowledgement's path, and 7% of the
    /// broker's CPU at a tenth of saturation.
    pub fn write_create(path: &Path, chunks: &[Bytes]) -> Result<(), Error> {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        let whole = len / ALIGN * ALIGN;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        // All digits after the `#`: `LocalFileSystem` lists such names as staging
        // files, not objects, so what a crash leaves here is never read as data.
        let staged = PathBuf::from(format!("{}#{}{n:012}", path.display(), std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut f = if whole > 0 {
                open_direct(&staged)?
            } else {
                open_new(&staged, 0)?
            };
            if whole > 0 {
                match chunks {
                    // A segment built by `SegmentBuilder` starts on a block
                    // boundary: its whole blocks go straight from its bytes.
                    [one] if one.as_ptr().align_offset(ALIGN) == 0 => f.write_all(&one[..whole])?,
                    _ => with_aligned(whole, |buf| {
                        copy_prefix(chunks, buf);
                        f.write_all(buf)
                    })?,
                }
                buffered(&f)?;
            }
            let mut at = 0;
            for c in chunks {
                let end = at + c.len();
                if end > whole {
                    f.write_all(&c[whole.saturating_sub(at)..])?;
                }
                at = end;
            }
            f.sync_data()
        })();
        let linked = written.and_then(|()| std::fs::hard_link(&staged, path));
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists(e)),
            Err(e) => Err(Error::Io(e)),
        }
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
        if matches!(opts.mode, PutMode::Create) && self.direct {
            let path = self.inner.path_to_filesystem(location)?;
            let chunks: Vec<Bytes> = payload.into_iter().collect();
            // One blocking-thread hop for the write and the directory fsyncs.
            let dirs = self.sync_handle(false);
            let written = tokio::task::spawn_blocking(move || {
                direct::write_create(&path, &chunks)?;
                dirs.run(&path).map_err(direct::Error::Io)
            })
            .await;
            match written {
                Ok(Ok(synced)) => {
                    self.remember_synced(synced);
                    return Ok(PutResult {
                        e_tag: None,
                        version: None,
                    });
                }
                Ok(Err(direct::Error::Exists(e))) => {
                    return Err(object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: Box::new(e),
                    })
                }
                Ok(Err(direct::Error::Io(e))) => {
                    return Err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })
                }
                Err(e) => {
                    return Err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })
                }
            }
        }
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
        let dirs = s.sync_handle(false).dirs;
        for d in ["ns/t/0", "ns/t", "ns"] {
            assert!(dirs.contains(&root.join(d)), "{d} synced");
        }
        assert_eq!(
            s.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"data"[..]
        );
    }

    fn store_at(root: &FsPath) -> SyncedLocalStore {
        SyncedLocalStore::new(
            LocalFileSystem::new_with_prefix(root).unwrap(),
            root.to_path_buf(),
        )
    }

    fn create() -> PutOptions {
        PutOptions {
            mode: object_store::PutMode::Create,
            ..PutOptions::default()
        }
    }

    /// `data` in a buffer whose first byte is on a 4 KiB boundary.
    fn aligned_copy(data: &[u8]) -> Bytes {
        use bytes::{Buf, BufMut};
        let mut b = bytes::BytesMut::with_capacity(data.len() + 4096);
        let skip = b.as_ptr().align_offset(4096);
        b.put_bytes(0, skip);
        b.advance(skip);
        b.extend_from_slice(data);
        b.freeze()
    }

    /// Every size around the block size, in one chunk, in several and in one
    /// block-aligned chunk (written without a copy), reads back byte for byte at
    /// its exact length; a second create-only PUT of the name is refused with
    /// AlreadyExists and leaves the first. On a filesystem without
    /// O_DIRECT the same holds through the page cache.
    async fn puts_read_back_exactly(s: &SyncedLocalStore, root: &FsPath) {
        for (i, len) in [0usize, 1, 511, 4095, 4096, 4097, 8192, (1 << 20) + 3]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            // Two halves, and three chunks cut on either side of the first block
            // boundary (what goes direct and what goes buffered meet there).
            let (half, a, b) = (len / 2, len.min(4095), len.min(4097));
            let payload = PutPayload::from_iter([
                Bytes::copy_from_slice(&data[..half]),
                Bytes::copy_from_slice(&data[half..]),
            ]);
            let p = Path::from(format!("ns/t/{i}/segment-{len}.kfs"));
            s.put_opts(&p, payload, create()).await.unwrap();
            let file = root.join(format!("ns/t/{i}/segment-{len}.kfs"));
            let cut = PutPayload::from_iter([
                Bytes::copy_from_slice(&data[..a]),
                Bytes::copy_from_slice(&data[a..b]),
                Bytes::copy_from_slice(&data[b..]),
            ]);
            let p3 = Path::from(format!("ns/t3/{i}/segment-{len}.kfs"));
            s.put_opts(&p3, cut, create()).await.unwrap();
            let file3 = root.join(format!("ns/t3/{i}/segment-{len}.kfs"));
            assert_eq!(std::fs::read(&file3).unwrap(), data, "size {len}, 3 chunks");
            // One chunk starting on a block boundary, as `SegmentBuilder` makes
            // them: its whole blocks are written from it, not copied.
            let aligned = aligned_copy(&data);
            assert_eq!(aligned.as_ptr().align_offset(4096), 0);
            let pa = Path::from(format!("ns/ta/{i}/segment-{len}.kfs"));
            s.put_opts(&pa, PutPayload::from_bytes(aligned), create())
                .await
                .unwrap();
            let filea = root.join(format!("ns/ta/{i}/segment-{len}.kfs"));
            assert_eq!(std::fs::read(&filea).unwrap(), data, "size {len}, aligned");
            assert_eq!(std::fs::metadata(&file).unwrap().len(), len as u64);
            assert_eq!(std::fs::read(&file).unwrap(), data, "size {len}");
            let again = s
                .put_opts(&p, PutPayload::from_static(b"other"), create())
                .await;
            assert!(
                matches!(again, Err(object_store::Error::AlreadyExists { .. })),
                "{again:?}"
            );
            assert_eq!(std::fs::read(&file).unwrap(), data);
            // No staging file is left beside it, and listing sees the object.
            let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, vec![format!("segment-{len}.kfs")]);
        }
        use futures::StreamExt;
        // What a crash between write and link leaves is not listed as an object.
        let leftover = format!("ns/t/0/segment-0.kfs#{}000000000007", std::process::id());
        std::fs::write(root.join(leftover), b"x").unwrap();
        let listed = s.list(Some(&Path::from("ns/t"))).collect::<Vec<_>>().await;
        assert_eq!(listed.len(), 8);
    }

    #[tokio::test]
    async fn create_only_puts_are_exact_and_refuse_an_existing_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let s = store_at(&root);
        // Which path ran depends on the filesystem under the temporary directory.
        eprintln!("O_DIRECT writes: {}", s.writes_direct());
        puts_read_back_exactly(&s, &root).await;
    }

    #[tokio::test]
    async fn buffered_create_only_puts_are_exact_too() {
        // The path of filesystems that refuse O_DIRECT (tmpfs before Linux 6.6,
        // some FUSE mounts).
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let mut s = store_at(&root);
        s.direct = false;
        puts_read_back_exactly(&s, &root).await;
    }
}
