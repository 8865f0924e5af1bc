//! Fault injection through the same `ObjectStore` trait the broker uses, so the
//! retry and back-pressure code is tested against the real call sites. The
//! broker wraps its store in this only when `KAFSCALE_FAULTS_FILE` is set.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    PutFail,
    PutHang,
    PutSlow(Duration),
    /// The PUT reaches the inner store (and is stored, or refused, there), but its
    /// answer is lost: the caller gets an error whatever the store said. For the
    /// retry of a PUT whose first attempt did succeed. Single PUTs only; a multipart
    /// upload proceeds unharmed.
    PutLost,
}

/// Faults of each kind of call, set together: a control line holds one token per
/// call kind, space- or comma-separated (`put=slow:100 list=slow:300 get=fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    pub put: Fault,
    /// LIST calls (a partition's recovery lists its segments).
    pub list: ReadFault,
    /// GET calls (footer reads at recovery, segment reads for consumers).
    pub get: ReadFault,
}

/// A fault of LIST or GET calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFault {
    #[default]
    None,
    Fail,
    Slow(Duration),
}

/// `slow:MS` as a duration.
fn slow(s: &str) -> Option<Duration> {
    s.strip_prefix("slow:")
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

impl ReadFault {
    fn parse(s: &str) -> ReadFault {
        match s {
            "fail" => ReadFault::Fail,
            other => slow(other).map_or(ReadFault::None, ReadFault::Slow),
        }
    }

    async fn apply(self, what: &'static str) -> object_store::Result<()> {
        match self {
            ReadFault::None => Ok(()),
            ReadFault::Fail => Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("injected {what} failure").into(),
            }),
            ReadFault::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

impl Faults {
    /// One token per call kind: `put=fail|hang|lost|slow:MS`, `list=fail|slow:MS`,
    /// `get=fail|slow:MS`; `none` or anything unknown is no fault.
    pub fn parse(s: &str) -> Faults {
        let mut f = Faults::default();
        for token in s.split(|c: char| c.is_whitespace() || c == ',') {
            if let Some(v) = token.strip_prefix("list=") {
                f.list = ReadFault::parse(v);
            } else if let Some(v) = token.strip_prefix("get=") {
                f.get = ReadFault::parse(v);
            } else if token.starts_with("put=") {
                f.put = Fault::parse(token);
            }
        }
        f
    }
}

impl Fault {
    /// `none`, `put=fail`, `put=hang`, `put=lost` or `put=slow:MS`; anything else is
    /// no fault.
    pub fn parse(s: &str) -> Fault {
        match s.trim() {
            "put=fail" => Fault::PutFail,
            "put=hang" => Fault::PutHang,
            "put=lost" => Fault::PutLost,
            other => other
                .strip_prefix("put=")
                .and_then(slow)
                .map_or(Fault::None, Fault::PutSlow),
        }
    }
}

pub enum FaultControl {
    /// A file holding one fault line, re-read at most every 50 ms.
    File(PathBuf),
    /// Set directly (unit and in-process tests).
    Fixed(Arc<Mutex<Faults>>),
}

const REREAD: Duration = Duration::from_millis(50);

pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    control: FaultControl,
    cached: Mutex<(Instant, Faults)>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({:?})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, control: FaultControl) -> Self {
        let past = Instant::now()
            .checked_sub(REREAD * 2)
            .unwrap_or_else(Instant::now);
        FaultyStore {
            inner,
            control,
            cached: Mutex::new((past, Faults::default())),
        }
    }

    fn current(&self) -> Faults {
        match &self.control {
            FaultControl::Fixed(f) => f.lock().map(|g| *g).unwrap_or_default(),
            FaultControl::File(path) => {
                let Ok(mut c) = self.cached.lock() else {
                    return Faults::default();
                };
                if c.0.elapsed() >= REREAD {
                    let fault = std::fs::read_to_string(path)
                        .map(|s| Faults::parse(&s))
                        .unwrap_or_default();
                    *c = (Instant::now(), fault);
                }
                c.1
            }
        }
    }

    /// Applies the PUT fault that comes before the call; `PutLost` is for the caller
    /// to apply after it.
    async fn before_put(&self) -> object_store::Result<()> {
        loop {
            match self.current().put {
                Fault::None | Fault::PutLost => return Ok(()),
                Fault::PutFail => {
                    return Err(object_store::Error::Generic {
                        store: "faulty",
                        source: "injected PUT failure".into(),
                    })
                }
                Fault::PutSlow(d) => {
                    tokio::time::sleep(d).await;
                    return Ok(());
                }
                Fault::PutHang => tokio::time::sleep(REREAD).await,
            }
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.before_put().await?;
        let lost = self.current().put == Fault::PutLost;
        let r = self.inner.put_opts(location, payload, opts).await;
        if lost {
            tracing::debug!(%location, stored = r.is_ok(), "injected lost PUT answer");
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected PUT failure: the answer was lost (the request reached the store)"
                    .into(),
            });
        }
        r
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before_put().await?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.current().get.apply("GET").await?;
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        use futures::{StreamExt, TryStreamExt};
        let fault = self.current().list;
        let inner = self.inner.list(prefix);
        futures::stream::once(async move { fault.apply("LIST").await.map(|()| inner) })
            .try_flatten()
            .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.current().list.apply("LIST").await?;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn parses_fault_lines() {
        assert_eq!(Fault::parse("put=fail\n"), Fault::PutFail);
        assert_eq!(Fault::parse("put=hang"), Fault::PutHang);
        assert_eq!(Fault::parse("put=lost"), Fault::PutLost);
        assert_eq!(
            Fault::parse("put=slow:250"),
            Fault::PutSlow(Duration::from_millis(250))
        );
        assert_eq!(Fault::parse(""), Fault::None);
        assert_eq!(Fault::parse("none"), Fault::None);
        let all = Faults::parse("put=slow:5 list=slow:300,get=fail\n");
        assert_eq!(all.put, Fault::PutSlow(Duration::from_millis(5)));
        assert_eq!(all.list, ReadFault::Slow(Duration::from_millis(300)));
        assert_eq!(all.get, ReadFault::Fail);
        assert_eq!(Faults::parse("put=fail").put, Fault::PutFail);
        assert_eq!(Faults::parse("none"), Faults::default());
    }

    #[tokio::test]
    async fn list_and_get_faults() {
        use futures::TryStreamExt;
        let fault = Arc::new(Mutex::new(Faults::default()));
        let store = FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultControl::Fixed(fault.clone()),
        );
        store
            .put(&Path::from("a/x"), PutPayload::from_static(b"1"))
            .await
            .unwrap();
        fault.lock().unwrap().list = ReadFault::Fail;
        fault.lock().unwrap().get = ReadFault::Fail;
        assert!(store
            .list(Some(&Path::from("a")))
            .try_collect::<Vec<_>>()
            .await
            .is_err());
        assert!(store.get(&Path::from("a/x")).await.is_err());
        *fault.lock().unwrap() = Faults::default();
        let listed: Vec<_> = store
            .list(Some(&Path::from("a")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            store
                .get(&Path::from("a/x"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
            &b"1"[..]
        );
    }

    #[tokio::test]
    async fn fail_then_hang_then_clear() {
        let fault = Arc::new(Mutex::new(Faults {
            put: Fault::PutFail,
            ..Faults::default()
        }));
        let store = Arc::new(FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultControl::Fixed(fault.clone()),
        ));
        let p = Path::from("x");
        assert!(store.put(&p, PutPayload::from_static(b"1")).await.is_err());
        fault.lock().unwrap().put = Fault::PutHang;
        let s2 = store.clone();
        let put = tokio::spawn(async move {
            s2.put(&Path::from("x"), PutPayload::from_static(b"2"))
                .await
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!put.is_finished());
        fault.lock().unwrap().put = Fault::None;
        put.await.unwrap().unwrap();
        assert_eq!(
            store.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"2"[..]
        );
    }

    #[tokio::test]
    async fn a_lost_put_is_stored_but_reported_failed() {
        let fault = Arc::new(Mutex::new(Faults {
            put: Fault::PutLost,
            ..Faults::default()
        }));
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultyStore::new(inner.clone(), FaultControl::Fixed(fault.clone()));
        let p = Path::from("lost");
        let err = store
            .put(&p, PutPayload::from_static(b"1"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("answer was lost"), "{err}");
        assert_eq!(
            inner.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"1"[..]
        );
        // The options reach the inner store: a create-only PUT of an existing key is
        // refused there.
        let create = PutOptions {
            mode: object_store::PutMode::Create,
            ..PutOptions::default()
        };
        fault.lock().unwrap().put = Fault::None;
        assert!(matches!(
            store
                .put_opts(&p, PutPayload::from_static(b"2"), create)
                .await,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        assert_eq!(
            inner.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"1"[..]
        );
    }

    #[tokio::test]
    async fn file_control_is_reread() {
        let path = std::env::temp_dir().join(format!("kafscale-faults-{}", std::process::id()));
        std::fs::write(&path, "put=fail").unwrap();
        let store = FaultyStore::new(Arc::new(InMemory::new()), FaultControl::File(path.clone()));
        assert!(store
            .put(&Path::from("y"), PutPayload::from_static(b"1"))
            .await
            .is_err());
        std::fs::write(&path, "none").unwrap();
        tokio::time::sleep(REREAD * 2).await;
        store
            .put(&Path::from("y"), PutPayload::from_static(b"1"))
            .await
            .unwrap();
        std::fs::remove_file(path).ok();
    }
}
