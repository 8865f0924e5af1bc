//! Kafscale segment storage: the `.kfs`/`.index` formats, the in-memory segment
//! builder, the object store (local directory, memory, S3 with read replica) and
//! the typed segment API over it, the per-shard read cache, and fault injection
//! through the same object-store trait. No Kafka networking.

pub mod cache;
pub mod commitlog;
pub mod compact;
pub mod durable;
pub mod faults;
pub mod format;
pub mod fuzzing;
pub mod health;
pub mod instrumented;
pub mod keys;
pub mod segment_store;
pub mod store;

pub use cache::SegmentCache;
pub use faults::{Fault, FaultControl, Faults, FaultyStore, ReadFault};
pub use format::index::{encode_index, parse_index, DEFAULT_INDEX_INTERVAL};
pub use format::segment::{
    coalesce, parse_footer, parse_header, BatchPos, FormatError, SealedSegment, Segment,
    SegmentBuilder, SegmentFooter, SegmentHeader, SEGMENT_FOOTER_LEN, SEGMENT_HEADER_LEN,
};
pub use health::{HealthConfig, HealthSnapshot, HealthState, S3Health};
pub use instrumented::{InstrumentedStore, OpStats, StoreStats, STORE_LATENCY_BUCKETS, STORE_OPS};
pub use segment_store::{CompactedMeta, SegmentMeta, SegmentStore};
pub use store::{build_object_store, ReadReplicaStore, S3Config, StoreConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {key} is corrupt: {source}")]
    Corrupt { key: String, source: FormatError },
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    #[error("object store configuration: {0}")]
    Config(String),
    /// A create-only PUT found an object with different bytes at its key: another
    /// writer (e.g. a broker that took the partition over while this one was
    /// paused) stored a different segment there. It was not overwritten, and no
    /// retry can succeed.
    #[error(
        "object {key} already exists with different content: another writer stored a \
         different object at that key; it was not overwritten"
    )]
    Conflict { key: String },
    /// A file operation of the broker's own local-directory writer (the
    /// io_uring path, which does not go through `object_store`).
    #[error("local store file {path}: {source}")]
    LocalFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_) | StoreError::Backend(object_store::Error::NotFound { .. })
        )
    }
}
