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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    PutFail,
    PutHang,
    PutSlow(Duration),
}

impl Fault {
    /// `none`, `put=fail`, `put=hang` or `put=slow:MS`; anything else is no fault.
    pub fn parse(s: &str) -> Fault {
        match s.trim() {
            "put=fail" => Fault::PutFail,
            "put=hang" => Fault::PutHang,
            other => match other
                .strip_prefix("put=slow:")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
            {
                Some(ms) => Fault::PutSlow(Duration::from_millis(ms)),
                None => Fault::None,
            },
        }
    }
}

pub enum FaultControl {
    /// A file holding one fault line, re-read at most every 50 ms.
    File(PathBuf),
    /// Set directly (unit tests).
    Fixed(Arc<Mutex<Fault>>),
}

const REREAD: Duration = Duration::from_millis(50);

pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    control: FaultControl,
    cached: Mutex<(Instant, Fault)>,
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
            cached: Mutex::new((past, Fault::None)),
        }
    }

    fn current(&self) -> Fault {
        match &self.control {
            FaultControl::Fixed(f) => f.lock().map(|g| *g).unwrap_or(Fault::None),
            FaultControl::File(path) => {
                let Ok(mut c) = self.cached.lock() else {
                    return Fault::None;
                };
                if c.0.elapsed() >= REREAD {
                    let fault = std::fs::read_to_string(path)
                        .map(|s| Fault::parse(&s))
                        .unwrap_or(Fault::None);
                    *c = (Instant::now(), fault);
                }
                c.1
            }
        }
    }

    async fn before_put(&self) -> object_store::Result<()> {
        loop {
            match self.current() {
                Fault::None => return Ok(()),
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
        self.inner.put_opts(location, payload, opts).await
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
        self.inner.get_opts(location, options).await
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
        assert_eq!(
            Fault::parse("put=slow:250"),
            Fault::PutSlow(Duration::from_millis(250))
        );
        assert_eq!(Fault::parse(""), Fault::None);
        assert_eq!(Fault::parse("none"), Fault::None);
    }

    #[tokio::test]
    async fn fail_then_hang_then_clear() {
        let fault = Arc::new(Mutex::new(Fault::PutFail));
        let store = Arc::new(FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultControl::Fixed(fault.clone()),
        ));
        let p = Path::from("x");
        assert!(store.put(&p, PutPayload::from_static(b"1")).await.is_err());
        *fault.lock().unwrap() = Fault::PutHang;
        let s2 = store.clone();
        let put = tokio::spawn(async move {
            s2.put(&Path::from("x"), PutPayload::from_static(b"2"))
                .await
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!put.is_finished());
        *fault.lock().unwrap() = Fault::None;
        put.await.unwrap().unwrap();
        assert_eq!(
            store.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"2"[..]
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
