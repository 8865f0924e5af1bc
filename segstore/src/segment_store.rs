//! The typed API the broker uses for segments: the object store wrapped once,
//! not sprinkled through the broker. All futures are `Send` (they run on the
//! broker's I/O runtime).

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::format::index::{encode_index, DEFAULT_INDEX_INTERVAL};
use crate::format::segment::{
    parse_footer, SealedSegment, Segment, SegmentFooter, SEGMENT_FOOTER_LEN,
};
use crate::format::segment::{parse_header, SEGMENT_HEADER_LEN};
use crate::keys::{
    index_path, object_index_path, object_path, parse_compacted, parse_index_base,
    parse_segment_base, partition_prefix, quarantine_path, segment_path, topic_prefix,
};
use crate::StoreError;

/// A segment object found by listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    pub base_offset: i64,
    pub size: u64,
}

/// A compacted segment object found by listing (`keys::object_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactedMeta {
    /// First offset of the range the object replaced.
    pub base: i64,
    pub gen: u64,
    pub size: u64,
}

#[derive(Clone)]
pub struct SegmentStore {
    store: Arc<dyn ObjectStore>,
    namespace: Arc<str>,
}

impl SegmentStore {
    pub fn new(store: Arc<dyn ObjectStore>, namespace: &str) -> Self {
        SegmentStore {
            store,
            namespace: namespace.into(),
        }
    }

    /// One cheap LIST of the namespace prefix: the readiness check's proof that the
    /// object store answers (an empty namespace is a success).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let prefix = Path::from(self.namespace.as_ref());
        self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(())
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Stores the `.kfs` and its `.index` concurrently; both must succeed before the
    /// segment counts as durable.
    ///
    /// Both objects are written create-only (`PutMode::Create`: `If-None-Match: *` on
    /// S3, a hard link that fails on an existing file in a local directory), so a
    /// segment that was acknowledged can never be replaced, not even by a broker that
    /// was paused while another one took the partition over and now writes its own,
    /// different segment at the same base offset.
    ///
    /// A retry must still succeed when an earlier attempt of the same PUT reached the
    /// store and only its answer was lost (a timeout, a dropped connection; object_store
    /// may also resend a request itself): when the store answers that the key exists,
    /// the stored object is read back and compared byte for byte with ours. The same
    /// bytes are our own earlier write, so the PUT succeeded (idempotent retry);
    /// different bytes are another writer's object, and the result is
    /// [`StoreError::Conflict`], which no retry can cure. The `.kfs` and the `.index`
    /// follow the same rule. (An index holds only offsets and positions, so two
    /// different segments can have identical indexes; the `.kfs`, with its creation
    /// time and CRC, is what tells them apart.)
    pub async fn put_segment(
        &self,
        topic: &str,
        partition: i32,
        sealed: &SealedSegment,
    ) -> Result<(), StoreError> {
        self.put_object(topic, partition, sealed.segment.base_offset, 0, sealed)
            .await
    }

    /// `put_segment` at the key `keys::object_path(base, gen)`: gen 0 is the
    /// plain segment name, others a compacted segment's.
    pub async fn put_object(
        &self,
        topic: &str,
        partition: i32,
        base: i64,
        gen: u64,
        sealed: &SealedSegment,
    ) -> Result<(), StoreError> {
        let data = object_path(&self.namespace, topic, partition, base, gen);
        let index = object_index_path(&self.namespace, topic, partition, base, gen);
        let (kfs, idx) = futures::join!(
            self.put_create_only(&data, &sealed.segment.data),
            self.put_create_only(&index, &sealed.index),
        );
        kfs?;
        match idx {
            // The `.kfs` is ours (created now, or byte for byte ours from an earlier
            // attempt), so the `.index` beside it is ours to write: a different one
            // there is an orphan of an upload interrupted between its two PUTs (the
            // `.index` landed, the `.kfs` did not, and recovery, which lists `.kfs`
            // objects only, continued at the same base offset). Replacing it is safe
            // because only the writer that owns the `.kfs` ever gets here.
            Err(StoreError::Conflict { .. }) => {
                self.store
                    .put(&index, PutPayload::from_bytes(sealed.index.clone()))
                    .await?;
                Ok(())
            }
            other => other,
        }
    }

    /// One create-only PUT of `bytes` at `key`, with the idempotent-retry rule of
    /// [`SegmentStore::put_segment`].
    async fn put_create_only(&self, key: &Path, bytes: &Bytes) -> Result<(), StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(key, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(exists @ object_store::Error::AlreadyExists { .. }) => {
                self.check_stored(key, bytes, exists).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// After a create-only PUT of `bytes` at `key` was refused because the key exists:
    /// Ok if the stored object is byte for byte `bytes` (our own earlier attempt),
    /// `Conflict` if it differs.
    async fn check_stored(
        &self,
        key: &Path,
        bytes: &Bytes,
        exists: object_store::Error,
    ) -> Result<(), StoreError> {
        let stored = match self.store.get(key).await {
            Ok(r) => r,
            // Refused, yet not there: a concurrent PUT still in flight (S3 answers 409
            // ConditionalRequestConflict to the loser of a race, which object_store also
            // reports as AlreadyExists) or a delete since. That proves neither outcome,
            // so report the refusal as an ordinary store error: a retry decides.
            Err(object_store::Error::NotFound { .. }) => return Err(exists.into()),
            Err(e) => return Err(e.into()),
        };
        let conflict = || StoreError::Conflict {
            key: key.to_string(),
        };
        // A different length is a conflict without reading the body.
        if stored.meta.size != bytes.len() as u64 {
            return Err(conflict());
        }
        if stored.bytes().await? == *bytes {
            Ok(())
        } else {
            Err(conflict())
        }
    }

    pub async fn list_segments(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<SegmentMeta>, StoreError> {
        let prefix = partition_prefix(&self.namespace, topic, partition);
        let mut out: Vec<SegmentMeta> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move {
                Ok(m.location
                    .filename()
                    .and_then(parse_segment_base)
                    .map(|base| SegmentMeta {
                        base_offset: base,
                        size: m.size,
                    }))
            })
            .try_collect()
            .await?;
        out.sort_by_key(|m| m.base_offset);
        Ok(out)
    }

    /// The compacted segment objects of a partition, by base offset.
    pub async fn list_compacted(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<CompactedMeta>, StoreError> {
        let prefix = partition_prefix(&self.namespace, topic, partition);
        let mut out: Vec<CompactedMeta> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move {
                Ok(m.location
                    .filename()
                    .and_then(parse_compacted)
                    .map(|(base, gen)| CompactedMeta {
                        base,
                        gen,
                        size: m.size,
                    }))
            })
            .try_collect()
            .await?;
        out.sort_by_key(|m| (m.base, m.gen));
        Ok(out)
    }

    /// Reads a segment's footer with a ranged GET of its last 16 bytes.
    pub async fn read_footer(
        &self,
        topic: &str,
        partition: i32,
        meta: &SegmentMeta,
    ) -> Result<SegmentFooter, StoreError> {
        let path = segment_path(&self.namespace, topic, partition, meta.base_offset);
        if meta.size < SEGMENT_FOOTER_LEN as u64 {
            return Err(StoreError::Corrupt {
                key: path.to_string(),
                source: crate::FormatError::Truncated {
                    have: meta.size as usize,
                    need: SEGMENT_FOOTER_LEN,
                },
            });
        }
        let tail = self
            .store
            .get_range(&path, meta.size - SEGMENT_FOOTER_LEN as u64..meta.size)
            .await?;
        parse_footer(&tail).map_err(|source| StoreError::Corrupt {
            key: path.to_string(),
            source,
        })
    }

    /// Reads and verifies a whole segment.
    pub async fn read_segment(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> Result<Segment, StoreError> {
        self.read_object(topic, partition, base_offset, 0).await
    }

    /// Reads and verifies the segment object `keys::object_path(base, gen)`.
    pub async fn read_object(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
        gen: u64,
    ) -> Result<Segment, StoreError> {
        let path = object_path(&self.namespace, topic, partition, base_offset, gen);
        let data = match self.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(path.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        Segment::parse(data).map_err(|source| StoreError::Corrupt {
            key: path.to_string(),
            source,
        })
    }

    /// Base offsets of the `.index` objects of a partition.
    pub async fn list_indexes(&self, topic: &str, partition: i32) -> Result<Vec<i64>, StoreError> {
        let prefix = partition_prefix(&self.namespace, topic, partition);
        let mut out: Vec<i64> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move { Ok(m.location.filename().and_then(parse_index_base)) })
            .try_collect()
            .await?;
        out.sort_unstable();
        Ok(out)
    }

    /// Writes the `.index` of a stored segment from its batches (one that went
    /// missing: an upload interrupted between its two PUTs, or a deletion).
    /// Create-only: an index that appeared meanwhile is left as it is.
    pub async fn rebuild_index(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> Result<(), StoreError> {
        let seg = self.read_segment(topic, partition, base_offset).await?;
        let index = encode_index(&seg.batches, DEFAULT_INDEX_INTERVAL);
        let key = index_path(&self.namespace, topic, partition, base_offset);
        match self.put_create_only(&key, &index).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves a segment that cannot be served (bad footer, truncated, corrupt)
    /// out of its partition: copied under the quarantine prefix
    /// (`keys::quarantine_path`), then its `.kfs` and `.index` deleted. Only the
    /// partition's owner may call this (it holds the claim, so no other broker
    /// writes at these keys; objects are otherwise never replaced or removed
    /// while they hold acknowledged data).
    ///
    /// Returns the last offset the object's intact part shows (its header's
    /// message count, or the last complete batch), so that recovery never hands
    /// those offsets out again; `None` if nothing in it can be read.
    pub async fn quarantine_segment(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> Result<Option<i64>, StoreError> {
        let path = segment_path(&self.namespace, topic, partition, base_offset);
        let data = match self.store.get(&path).await {
            Ok(r) => Some(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let last = data.as_deref().and_then(last_offset_shown);
        if data.is_some() {
            let to = quarantine_path(&self.namespace, topic, partition, base_offset);
            self.store.copy(&path, &to).await?;
        }
        self.delete_segment(topic, partition, base_offset).await?;
        Ok(last)
    }

    /// Deletes every object of a topic; returns how many.
    pub async fn delete_topic(&self, topic: &str) -> Result<usize, StoreError> {
        let prefix = topic_prefix(&self.namespace, topic);
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        let deleted: Vec<_> = self
            .store
            .delete_stream(locations)
            .filter(|r| {
                futures::future::ready(!matches!(r, Err(object_store::Error::NotFound { .. })))
            })
            .try_collect()
            .await?;
        Ok(deleted.len())
    }

    /// Deletes one segment (data and index); missing objects are fine.
    pub async fn delete_segment(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> Result<(), StoreError> {
        self.delete_object(topic, partition, base_offset, 0).await
    }

    /// Deletes the objects of `keys::object_path(base, gen)` (data and index);
    /// missing objects are fine.
    pub async fn delete_object(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
        gen: u64,
    ) -> Result<(), StoreError> {
        for path in [
            object_path(&self.namespace, topic, partition, base_offset, gen),
            object_index_path(&self.namespace, topic, partition, base_offset, gen),
        ] {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The last offset the intact part of a damaged `.kfs` shows: from its header
/// (base offset and message count) and from its complete batches.
fn last_offset_shown(data: &[u8]) -> Option<i64> {
    let header = parse_header(data).ok()?;
    let from_header =
        (header.message_count > 0).then(|| header.base_offset + header.message_count as i64 - 1);
    let from_batches = data.get(SEGMENT_HEADER_LEN..).and_then(|body| {
        kafscale_codec::batch::Batches::new(body)
            .map_while(Result::ok)
            .map(|(h, _)| h.last_offset())
            .max()
    });
    from_header.max(from_batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::segment::SegmentBuilder;
    use kafscale_codec::batch::{build_batch, BatchHeader};
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    fn sealed(base: i64, n: usize) -> SealedSegment {
        let mut b = SegmentBuilder::new(base, 7, 256);
        for i in 0..n {
            let v = format!("value-{i}");
            let raw = build_batch(0, 1, &[v.as_bytes()]);
            let h = BatchHeader::parse(&raw).unwrap();
            b.append(&raw, &h, 0);
        }
        b.finish(10)
    }

    async fn exercise(store: Arc<dyn ObjectStore>) {
        let s = SegmentStore::new(store, "ns");
        assert!(s.list_segments("t", 0).await.unwrap().is_empty());
        s.put_segment("t", 0, &sealed(0, 3)).await.unwrap();
        s.put_segment("t", 0, &sealed(3, 2)).await.unwrap();
        s.put_segment("t", 1, &sealed(0, 1)).await.unwrap();
        s.put_segment("other", 0, &sealed(0, 1)).await.unwrap();
        let list = s.list_segments("t", 0).await.unwrap();
        assert_eq!(
            list.iter().map(|m| m.base_offset).collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert_eq!(
            s.read_footer("t", 0, &list[1]).await.unwrap().last_offset,
            4
        );
        let seg = s.read_segment("t", 0, 3).await.unwrap();
        assert_eq!(
            (seg.base_offset, seg.last_offset, seg.batches.len()),
            (3, 4, 2)
        );
        assert!(matches!(
            s.read_segment("t", 0, 99).await,
            Err(StoreError::NotFound(_))
        ));
        // Two partitions, two segments plus one: data and index objects each.
        assert_eq!(s.delete_topic("t").await.unwrap(), 6);
        assert!(s.list_segments("t", 0).await.unwrap().is_empty());
        assert_eq!(s.list_segments("other", 0).await.unwrap().len(), 1);
        s.delete_segment("other", 0, 0).await.unwrap();
        s.delete_segment("other", 0, 0).await.unwrap();
        assert!(s.list_segments("other", 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn in_memory() {
        exercise(Arc::new(InMemory::new())).await;
    }

    #[tokio::test]
    async fn local_directory_and_corruption() {
        // A fresh directory: segments are created only once, so leftovers of an
        // earlier run would conflict.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        exercise(Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())).await;
        let s = SegmentStore::new(
            Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap()),
            "ns",
        );
        s.put_segment("c", 0, &sealed(0, 2)).await.unwrap();
        let file = dir.join("ns/c/0/segment-00000000000000000000.kfs");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        assert!(matches!(
            s.read_segment("c", 0, 0).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_damaged_segment_is_quarantined_and_indexes_rebuilt() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let s = SegmentStore::new(mem.clone(), "ns");
        s.put_segment("q", 0, &sealed(0, 3)).await.unwrap();
        s.put_segment("q", 0, &sealed(3, 4)).await.unwrap();
        // Truncate the newest: its footer and last batch are gone.
        let key = segment_path("ns", "q", 0, 3);
        let full = mem.get(&key).await.unwrap().bytes().await.unwrap();
        mem.put(&key, PutPayload::from(full.slice(..full.len() - 30)))
            .await
            .unwrap();
        assert_eq!(s.quarantine_segment("q", 0, 3).await.unwrap(), Some(6));
        let listed: Vec<i64> = s
            .list_segments("q", 0)
            .await
            .unwrap()
            .iter()
            .map(|m| m.base_offset)
            .collect();
        assert_eq!(listed, vec![0]);
        assert!(mem.head(&quarantine_path("ns", "q", 0, 3)).await.is_ok());
        // A missing index is written again from the segment.
        mem.delete(&index_path("ns", "q", 0, 0)).await.unwrap();
        assert!(s.list_indexes("q", 0).await.unwrap().is_empty());
        s.rebuild_index("q", 0, 0).await.unwrap();
        assert_eq!(s.list_indexes("q", 0).await.unwrap(), vec![0]);
        // The same entries (the interval field is the broker's default).
        let rebuilt = mem
            .get(&index_path("ns", "q", 0, 0))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            crate::parse_index(&rebuilt).unwrap(),
            crate::parse_index(&sealed(0, 3).index).unwrap()
        );
    }
}
