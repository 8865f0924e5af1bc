//! Segment objects are written create-only (groundwork for fencing, issue #14): an
//! acknowledged segment can never be replaced by another writer, and a retry of our
//! own PUT whose answer was lost still succeeds. The same cases run on every real
//! backend the broker uses: `InMemory`, `LocalFileSystem` in a temporary directory,
//! and s3s-fs (a real S3 server that enforces `If-None-Match: *`).
//!
//! The store is wrapped the way the broker wraps it (`InstrumentedStore` around
//! `FaultyStore`), so the put mode must survive both wrappers; the checks read the
//! objects back from the unwrapped store.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafscale_codec::batch::{build_batch, BatchHeader};
use kafscale_segstore::keys::{index_path, segment_path};
use kafscale_segstore::{
    Fault, FaultControl, Faults, FaultyStore, InstrumentedStore, SealedSegment, SegmentBuilder,
    SegmentStore, StoreError, StoreStats,
};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

/// A segment at `base` holding one batch per value, and its index (one entry every
/// `interval` messages).
fn sealed(base: i64, created_ms: i64, values: &[&str], interval: i32) -> SealedSegment {
    let mut b = SegmentBuilder::new(base, created_ms, 256);
    for v in values {
        let raw = build_batch(0, 1, &[v.as_bytes()]);
        let h = BatchHeader::parse(&raw).unwrap();
        b.append(&raw, &h, 0);
    }
    b.finish(interval)
}

async fn stored(store: &Arc<dyn ObjectStore>, key: &Path) -> Bytes {
    store.get(key).await.unwrap().bytes().await.unwrap()
}

async fn maybe_stored(store: &Arc<dyn ObjectStore>, key: &Path) -> Option<Bytes> {
    match store.get(key).await {
        Ok(r) => Some(r.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("GET {key}: {e}"),
    }
}

/// The four cases on one backend; `inner` is the bare store, `what` names it in
/// failure messages.
async fn create_only_cases(what: &str, inner: Arc<dyn ObjectStore>) {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let faulty = FaultyStore::new(inner.clone(), FaultControl::Fixed(faults.clone()));
    let stats = Arc::new(StoreStats::default());
    let store = SegmentStore::new(
        Arc::new(InstrumentedStore::new(Arc::new(faulty), stats)),
        "ns",
    );
    let kfs = |base| segment_path("ns", "t", 0, base);
    let idx = |base| index_path("ns", "t", 0, base);

    // (a) The first PUT stores both objects.
    let first = sealed(0, 1_000, &["a0", "a1", "a2"], 2);
    store.put_segment("t", 0, &first).await.unwrap();
    assert_eq!(stored(&inner, &kfs(0)).await, first.segment.data, "{what}");
    assert_eq!(stored(&inner, &idx(0)).await, first.index, "{what}");

    // (b) The same segment again (a retry): Ok, and nothing changed.
    store.put_segment("t", 0, &first).await.unwrap();
    assert_eq!(stored(&inner, &kfs(0)).await, first.segment.data, "{what}");
    assert_eq!(stored(&inner, &idx(0)).await, first.index, "{what}");

    // (c) A different segment at the same base offset (another writer): Conflict,
    // naming the key, and the first segment stays. (Its index may well equal ours:
    // an index holds only offsets and positions. Then the `.kfs` conflicts.)
    let other = sealed(0, 2_000, &["b0", "b1", "b2", "b3"], 2);
    assert_ne!(other.segment.data, first.segment.data);
    match store.put_segment("t", 0, &other).await {
        Err(StoreError::Conflict { key }) => {
            assert!(
                key == kfs(0).as_ref() || key == idx(0).as_ref(),
                "{what}: {key}"
            )
        }
        r => panic!("{what}: a different segment at a taken key gave {r:?}"),
    }
    // The same length with other bytes is a conflict too (the length check alone
    // must not decide), and the error says what happened.
    let same_len = sealed(0, 3_000, &["a0", "a1", "a2"], 2);
    assert_eq!(same_len.segment.data.len(), first.segment.data.len());
    match store.put_segment("t", 0, &same_len).await {
        Err(e @ StoreError::Conflict { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(kfs(0).as_ref()), "{what}: {msg}");
            assert!(msg.contains("another writer"), "{what}: {msg}");
        }
        r => panic!("{what}: same length, other bytes gave {r:?}"),
    }
    // An orphaned `.index` (an upload cut short after its `.index` landed and
    // before its `.kfs` did) does not block the segment that is written at that
    // base offset next: whoever creates the `.kfs` owns the `.index` beside it.
    let orphan = sealed(9, 500, &["z0", "z1", "z2", "z3"], 1);
    inner
        .put(
            &idx(9),
            object_store::PutPayload::from_bytes(orphan.index.clone()),
        )
        .await
        .unwrap();
    let at_nine = sealed(9, 9_000, &["n0", "n1"], 1);
    assert_ne!(orphan.index, at_nine.index);
    store.put_segment("t", 0, &at_nine).await.unwrap();
    assert_eq!(
        stored(&inner, &kfs(9)).await,
        at_nine.segment.data,
        "{what}"
    );
    assert_eq!(stored(&inner, &idx(9)).await, at_nine.index, "{what}");
    // A writer whose `.kfs` lost may not touch the winner's `.index`.
    let loser = sealed(9, 9_500, &["l0", "l1", "l2"], 1);
    match store.put_segment("t", 0, &loser).await {
        Err(StoreError::Conflict { key }) => assert_eq!(key, kfs(9).as_ref(), "{what}"),
        r => panic!("{what}: a losing writer gave {r:?}"),
    }
    assert_eq!(stored(&inner, &idx(9)).await, at_nine.index, "{what}");
    inner.delete(&kfs(9)).await.unwrap();
    inner.delete(&idx(9)).await.unwrap();
    let read = store.read_segment("t", 0, 0).await.unwrap();
    assert_eq!(read.data, first.segment.data, "{what}");

    // (d) The PUT reaches the store but its answer is lost: an error, yet what it
    // wrote is stored. The two PUTs run together and the first error drops the
    // other one, which may or may not have reached the store (in a local directory
    // it may still finish in the background); the object whose lost answer came
    // back is there. The retry finds what is there and succeeds.
    let next = sealed(3, 4_000, &["c0", "c1"], 2);
    faults.lock().unwrap().put = Fault::PutLost;
    match store.put_segment("t", 0, &next).await {
        Err(StoreError::Backend(e)) => assert!(e.to_string().contains("lost"), "{what}: {e}"),
        r => panic!("{what}: a lost PUT answer gave {r:?}"),
    }
    let kfs_there = maybe_stored(&inner, &kfs(3)).await;
    let idx_there = maybe_stored(&inner, &idx(3)).await;
    assert!(
        kfs_there.as_ref() == Some(&next.segment.data) || idx_there.as_ref() == Some(&next.index),
        "{what}: neither object of the lost PUT is stored"
    );
    faults.lock().unwrap().put = Fault::None;
    store.put_segment("t", 0, &next).await.unwrap();
    assert_eq!(stored(&inner, &kfs(3)).await, next.segment.data, "{what}");
    assert_eq!(stored(&inner, &idx(3)).await, next.index, "{what}");
    let bases: Vec<i64> = store
        .list_segments("t", 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.base_offset)
        .collect();
    assert_eq!(bases, vec![0, 3], "{what}");
}

#[tokio::test]
async fn in_memory() {
    create_only_cases("InMemory", Arc::new(InMemory::new())).await;
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    create_only_cases("LocalFileSystem", Arc::new(store)).await;
}

/// s3s-fs on a free port of 127.0.0.1 with its files in a temporary directory;
/// killed when dropped.
struct S3sFs {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

const ACCESS: &str = "kafscale-test";
const SECRET: &str = "kafscale-test-secret";
const BUCKET: &str = "kafscale";

/// `KAFSCALE_S3S_FS`, or the repository's `.tools/bin/s3s-fs` (`make tools`).
fn s3s_fs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KAFSCALE_S3S_FS") {
        return PathBuf::from(p);
    }
    // The directory at run time: a test binary reused from another checkout through a
    // shared CARGO_TARGET_DIR must read this one, not the one it was compiled in.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../.tools/bin/s3s-fs")
}

impl S3sFs {
    fn start() -> S3sFs {
        let exe = s3s_fs_binary();
        assert!(
            exe.is_file(),
            "s3s-fs not found at {}: run `make tools` (or set KAFSCALE_S3S_FS to the binary)",
            exe.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&exe)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut server = S3sFs {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("s3s-fs exited before it listened on port {port}: {status}");
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS)
            .with_secret_access_key(SECRET)
            .build()
            .unwrap();
        Arc::new(s3)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn s3s_fs() {
    let server = S3sFs::start();
    let store = server.store();
    // The server itself refuses a second create: what it answers is what
    // object_store reports as AlreadyExists.
    let key = Path::from("probe");
    let create = || object_store::PutOptions {
        mode: object_store::PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&key, Bytes::from_static(b"1").into(), create())
        .await
        .unwrap();
    let refused = store
        .put_opts(&key, Bytes::from_static(b"2").into(), create())
        .await;
    assert!(
        matches!(refused, Err(object_store::Error::AlreadyExists { .. })),
        "{refused:?}"
    );
    assert_eq!(stored(&store, &key).await, &b"1"[..]);
    create_only_cases("s3s-fs", store).await;
}
