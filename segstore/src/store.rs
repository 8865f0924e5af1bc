//! Building the object store from configuration: a local directory (the
//! embedded default), memory, or S3 with an optional read replica.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tracing::debug;

use crate::StoreError;

#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub use_memory: bool,
    pub s3: Option<S3Config>,
}

#[derive(Clone, Debug, Default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    pub kms_arn: Option<String>,
    pub read_bucket: Option<String>,
    pub read_region: Option<String>,
    pub read_endpoint: Option<String>,
    /// Sign requests with `UNSIGNED-PAYLOAD` instead of a SHA-256 of the body.
    /// `None`: unsigned over HTTPS (TLS already protects the body, and hashing every
    /// byte costs about a quarter of the broker's CPU on the produce path), signed
    /// over plain HTTP.
    pub unsigned_payload: Option<bool>,
}

fn s3(
    bucket: &str,
    region: &str,
    endpoint: Option<&str>,
    cfg: &S3Config,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(!cfg.path_style);
    let plain_http = endpoint.is_some_and(|ep| ep.starts_with("http://"));
    if let Some(ep) = endpoint {
        b = b.with_endpoint(ep).with_allow_http(plain_http);
    }
    b = b.with_unsigned_payload(cfg.unsigned_payload.unwrap_or(!plain_http));
    if let (Some(k), Some(s)) = (&cfg.access_key, &cfg.secret_key) {
        b = b.with_access_key_id(k).with_secret_access_key(s);
    }
    if let Some(t) = &cfg.session_token {
        b = b.with_token(t);
    }
    if let Some(kms) = &cfg.kms_arn {
        b = b.with_sse_kms_encryption(kms);
    }
    Ok(Arc::new(b.build().map_err(|e| {
        StoreError::Config(format!("S3 bucket {bucket}: {e}"))
    })?))
}

pub fn build_object_store(cfg: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if cfg.use_memory {
        return Ok(Arc::new(InMemory::new()));
    }
    if let Some(c) = &cfg.s3 {
        let primary = s3(&c.bucket, &c.region, c.endpoint.as_deref(), c)?;
        return match &c.read_bucket {
            Some(rb) => {
                let region = c.read_region.as_deref().unwrap_or(&c.region);
                let endpoint = c.read_endpoint.as_deref().or(c.endpoint.as_deref());
                let replica = s3(rb, region, endpoint, c)?;
                Ok(Arc::new(ReadReplicaStore { primary, replica }))
            }
            None => Ok(primary),
        };
    }
    let dir = cfg.data_dir.join("objects");
    std::fs::create_dir_all(&dir)
        .map_err(|e| StoreError::Config(format!("creating {}: {e}", dir.display())))?;
    let local = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
    // The prefix as LocalFileSystem resolves it (absolute), so the fsync walk
    // up from a file stops there.
    let root = std::fs::canonicalize(&dir)
        .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
    Ok(Arc::new(crate::durable::SyncedLocalStore::new(local, root)))
}

/// Reads from a replica bucket (cross-region replication) first and falls back
/// to the primary when the replica does not have the object yet or fails;
/// writes, lists and deletes go to the primary, the source of truth.
#[derive(Debug)]
pub struct ReadReplicaStore {
    pub primary: Arc<dyn ObjectStore>,
    pub replica: Arc<dyn ObjectStore>,
}

impl fmt::Display for ReadReplicaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadReplica({}, primary {})", self.replica, self.primary)
    }
}

#[async_trait]
impl ObjectStore for ReadReplicaStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.primary.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.primary.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        match self.replica.get_opts(location, options.clone()).await {
            Ok(r) => Ok(r),
            Err(e) => {
                debug!(%location, error = %e, "read replica miss; reading the primary");
                self.primary.get_opts(location, options).await
            }
        }
    }
    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        match self.replica.get_range(location, range.clone()).await {
            Ok(r) => Ok(r),
            Err(e) => {
                debug!(%location, error = %e, "read replica miss; reading the primary");
                self.primary.get_range(location, range).await
            }
        }
    }
    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        match self.replica.head(location).await {
            Ok(r) => Ok(r),
            Err(_) => self.primary.head(location).await,
        }
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.primary.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.primary.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.primary.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.primary.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.primary.copy_if_not_exists(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replica_first_then_primary() {
        let primary: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let replica: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = ReadReplicaStore {
            primary: primary.clone(),
            replica: replica.clone(),
        };
        let p = Path::from("a/b");
        store
            .put(&p, PutPayload::from_static(b"primary"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"primary"[..]
        );
        replica
            .put(&p, PutPayload::from_static(b"replica"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"replica"[..]
        );
        assert_eq!(store.get_range(&p, 0..3).await.unwrap(), &b"rep"[..]);
        assert!(replica.head(&Path::from("x")).await.is_err());
    }

    #[tokio::test]
    async fn writes_keep_their_put_mode() {
        let primary: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = ReadReplicaStore {
            primary: primary.clone(),
            replica: Arc::new(InMemory::new()),
        };
        let p = Path::from("a/b");
        let create = || PutOptions {
            mode: object_store::PutMode::Create,
            ..PutOptions::default()
        };
        store
            .put_opts(&p, PutPayload::from_static(b"first"), create())
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_opts(&p, PutPayload::from_static(b"second"), create())
                .await,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        assert_eq!(
            primary.get(&p).await.unwrap().bytes().await.unwrap(),
            &b"first"[..]
        );
    }

    #[test]
    fn local_directory_is_created_under_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("kafscale-store-{}", std::process::id()));
        let cfg = StoreConfig {
            data_dir: dir.clone(),
            ..Default::default()
        };
        build_object_store(&cfg).unwrap();
        assert!(dir.join("objects").is_dir());
        std::fs::remove_dir_all(dir).ok();
    }
}
