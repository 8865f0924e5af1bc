//! A zero-copy view of Kafka record batches (magic v2), as producers send them
//! and as segments store them.
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch
//! i32 @12, magic i8 @16, crc u32 @17 (CRC32C of bytes 21..end), attributes i16 @21,
//! lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35, producerId
//! i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57,
//! records @61. Magic v0/v1 message sets keep the magic byte at the same place.

/// Bytes before the records in a v2 batch.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s payload starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
pub(crate) const CRC_FROM: usize = 21;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("record batch length {0} is invalid")]
    BadLength(i32),
    #[error("record format magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: header {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch has {count} records but lastOffsetDelta {delta}")]
    InconsistentCount { count: i32, delta: i32 },
}

/// Header fields of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// The `N` bytes at `at`, if `b` holds them.
#[inline]
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..)?.first_chunk::<N>().copied()
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the magic and that the whole
    /// batch is present, not the CRC (see [`verify_crc`]).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        let truncated = || BatchError::Truncated {
            have: buf.len(),
            need: HEADER_LEN,
        };
        let magic = *buf.get(MAGIC_AT).ok_or_else(truncated)? as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let h = buf.first_chunk::<HEADER_LEN>().ok_or_else(truncated)?;
        // Every field lies within the 61 bytes just taken: never `None`.
        let h = Self::fields(h, magic).ok_or_else(truncated)?;
        if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(h.batch_length));
        }
        if buf.len() < h.total_len() {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: h.total_len(),
            });
        }
        Ok(h)
    }

    /// The fields at their places in the layout above.
    fn fields(h: &[u8; HEADER_LEN], magic: i8) -> Option<Self> {
        Some(BatchHeader {
            base_offset: i64::from_be_bytes(bytes_at(h, 0)?),
            batch_length: i32::from_be_bytes(bytes_at(h, 8)?),
            partition_leader_epoch: i32::from_be_bytes(bytes_at(h, 12)?),
            magic,
            crc: u32::from_be_bytes(bytes_at(h, CRC_AT)?),
            attributes: i16::from_be_bytes(bytes_at(h, 21)?),
            last_offset_delta: i32::from_be_bytes(bytes_at(h, 23)?),
            base_timestamp: i64::from_be_bytes(bytes_at(h, 27)?),
            max_timestamp: i64::from_be_bytes(bytes_at(h, 35)?),
            producer_id: i64::from_be_bytes(bytes_at(h, 43)?),
            producer_epoch: i16::from_be_bytes(bytes_at(h, 51)?),
            base_sequence: i32::from_be_bytes(bytes_at(h, 53)?),
            record_count: i32::from_be_bytes(bytes_at(h, 57)?),
        })
    }

    /// Size of the whole batch in bytes, header included.
    #[inline]
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the batch's last record.
    #[inline]
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    #[inline]
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    /// Control batches (transaction markers) carry no user records.
    #[inline]
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Checks what a producer's batch must satisfy before we assign offsets to it.
    pub fn check_producer_batch(&self) -> Result<(), BatchError> {
        if self.record_count <= 0 || self.last_offset_delta != self.record_count - 1 {
            return Err(BatchError::InconsistentCount {
                count: self.record_count,
                delta: self.last_offset_delta,
            });
        }
        Ok(())
    }
}

/// Verifies the CRC32C of one complete batch (`batch` holds exactly that batch).
pub fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let covered = batch
        .get(CRC_FROM..header.total_len())
        .ok_or(BatchError::Truncated {
            have: batch.len(),
            need: header.total_len(),
        })?;
    let actual = crc32c::crc32c(covered);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Rewrites the offset and leader epoch of a batch in place. Neither field is
/// covered by the batch CRC, so the producer's CRC stays valid. Fails, changing
/// nothing, if `batch` is too short to hold them.
#[inline]
pub fn patch_header(
    batch: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
) -> Result<(), BatchError> {
    let have = batch.len();
    let head = batch
        .first_chunk_mut::<MAGIC_AT>()
        .ok_or(BatchError::Truncated {
            have,
            need: HEADER_LEN,
        })?;
    head[0..8].copy_from_slice(&base_offset.to_be_bytes());
    head[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    Ok(())
}

/// Stamps one complete, CRC-checked batch (`batch` holds exactly the batch
/// `header` was parsed from) with the broker's append time, as Kafka does for a
/// topic with `message.timestamp.type=LogAppendTime`: the timestamp-type
/// attribute is set and the max timestamp becomes `now_ms` (consumers then read
/// it as every record's timestamp). Both fields are covered by the batch CRC,
/// which is recomputed. Returns the header as it now is.
pub fn stamp_log_append_time(
    batch: &mut [u8],
    header: &BatchHeader,
    now_ms: i64,
) -> Result<BatchHeader, BatchError> {
    let total = header.total_len();
    let (have, need) = (batch.len(), total.max(HEADER_LEN));
    let truncated = move || BatchError::Truncated { have, need };
    if have != total || total < HEADER_LEN {
        return Err(truncated());
    }
    let attributes = header.attributes | LOG_APPEND_TIME;
    let mut put = |at: std::ops::Range<usize>, bytes: &[u8]| {
        batch
            .get_mut(at)
            .map(|field| field.copy_from_slice(bytes))
            .ok_or_else(truncated)
    };
    put(21..23, &attributes.to_be_bytes())?;
    put(35..43, &now_ms.to_be_bytes())?;
    let crc = crc32c::crc32c(batch.get(CRC_FROM..).unwrap_or_default());
    batch
        .get_mut(CRC_AT..CRC_FROM)
        .ok_or_else(truncated)?
        .copy_from_slice(&crc.to_be_bytes());
    Ok(BatchHeader {
        attributes,
        max_timestamp: now_ms,
        crc,
        ..*header
    })
}

/// Iterates over the batches of a concatenated buffer: a produce request's
/// `records` field or a segment body. Yields `(header, byte range)`; stops at the
/// first error, which it yields once.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Batches {
            buf,
            pos: 0,
            failed: false,
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(BatchHeader, std::ops::Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match BatchHeader::parse(self.buf.get(self.pos..)?) {
            Ok(h) => {
                let start = self.pos;
                self.pos += h.total_len();
                Some(Ok((h, start..self.pos)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A v2 batch with no records that spans `base_offset..=last_offset`: what a
/// fetch gets for offsets that were handed out but whose data is lost (a
/// quarantined segment, acknowledged offsets missing from the store). Kafka's
/// log cleaner leaves such empty batches too, and consumers step over them to
/// `last_offset + 1` instead of asking for the same offset for ever. The span
/// is capped at what one batch can describe (`i32::MAX` offsets).
pub fn empty_batch(base_offset: i64, last_offset: i64, timestamp: i64) -> Vec<u8> {
    let delta = last_offset
        .saturating_sub(base_offset)
        .clamp(0, i32::MAX as i64) as i32;
    let mut covered = Vec::with_capacity(HEADER_LEN - CRC_FROM);
    covered.extend_from_slice(&0i16.to_be_bytes());
    covered.extend_from_slice(&delta.to_be_bytes());
    covered.extend_from_slice(&timestamp.to_be_bytes());
    covered.extend_from_slice(&timestamp.to_be_bytes());
    covered.extend_from_slice(&(-1i64).to_be_bytes());
    covered.extend_from_slice(&(-1i16).to_be_bytes());
    covered.extend_from_slice(&(-1i32).to_be_bytes());
    covered.extend_from_slice(&0i32.to_be_bytes());
    let mut b = Vec::with_capacity(CRC_FROM + covered.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
    b.extend_from_slice(&covered);
    b
}

/// Builds a valid uncompressed v2 batch of `values` (test and benchmark helper;
/// the broker never builds batches itself, except `empty_batch`).
pub fn build_batch(base_offset: i64, timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = Vec::new();
        r.push(0); // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        varint(&mut r, -1); // null key
        varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        varint(&mut r, 0); // no headers
        varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let n = values.len() as i32;
    // What the CRC covers: attributes to the end.
    let mut covered = Vec::with_capacity(HEADER_LEN - CRC_FROM + records.len());
    covered.extend_from_slice(&0i16.to_be_bytes());
    covered.extend_from_slice(&(n - 1).to_be_bytes());
    covered.extend_from_slice(&timestamp.to_be_bytes());
    covered.extend_from_slice(&timestamp.to_be_bytes());
    covered.extend_from_slice(&(-1i64).to_be_bytes());
    covered.extend_from_slice(&(-1i16).to_be_bytes());
    covered.extend_from_slice(&(-1i32).to_be_bytes());
    covered.extend_from_slice(&n.to_be_bytes());
    covered.extend_from_slice(&records);
    let mut b = Vec::with_capacity(CRC_FROM + covered.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
    b.extend_from_slice(&covered);
    b
}

/// Attribute bits: compression codec (0 = none) and the timestamp type.
const COMPRESSION_MASK: i16 = 0x07;
const LOG_APPEND_TIME: i16 = 0x08;

/// Reads a zigzag varint (Kafka's record encoding) at `*pos`, advancing it.
fn read_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// `(offset, timestamp)` of every record of one v2 batch, in order. `None` for a
/// compressed batch (its records cannot be read without decompressing them) or a
/// malformed record section. Records of a LogAppendTime batch all carry the
/// batch's max timestamp, as in Kafka.
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let h = BatchHeader::parse(batch).ok()?;
    if h.attributes & COMPRESSION_MASK != 0 {
        return None;
    }
    let body = batch.get(..h.total_len())?;
    let mut pos = HEADER_LEN;
    let count = usize::try_from(h.record_count).ok()?;
    let mut out = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        let len = usize::try_from(read_varlong(body, &mut pos)?).ok()?;
        let record_end = pos.checked_add(len)?;
        if record_end > body.len() {
            return None;
        }
        let mut at = pos + 1; // record attributes (unused)
        let ts_delta = read_varlong(body, &mut at)?;
        let offset_delta = read_varlong(body, &mut at)?;
        let ts = if h.attributes & LOG_APPEND_TIME != 0 {
            h.max_timestamp
        } else {
            h.base_timestamp.saturating_add(ts_delta)
        };
        out.push((h.base_offset.saturating_add(offset_delta), ts));
        pos = record_end;
    }
    Some(out)
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    fn log_append_time_stamp_keeps_the_batch_valid() {
        let mut b = build_batch(0, 1_000, &[b"a", b"b"]);
        let h = BatchHeader::parse(&b).unwrap();
        let stamped = stamp_log_append_time(&mut b, &h, 5_000).unwrap();
        let again = BatchHeader::parse(&b).unwrap();
        assert_eq!(again, stamped);
        assert_eq!(again.max_timestamp, 5_000);
        assert_eq!(again.base_timestamp, 1_000);
        assert_eq!(again.attributes & LOG_APPEND_TIME, LOG_APPEND_TIME);
        verify_crc(&b, &again).unwrap();
        // Every record reads the append time.
        let ts = record_timestamps(&b).unwrap();
        assert_eq!(
            ts.iter().map(|&(_, t)| t).collect::<Vec<_>>(),
            vec![5_000, 5_000]
        );
        let short = &mut b[..HEADER_LEN];
        assert!(stamp_log_append_time(short, &h, 1).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_verifies_a_built_batch() {
        let b = build_batch(0, 1_700_000_000_000, &[b"a", b"bb", b"ccc"]);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.max_timestamp, 1_700_000_000_000);
        verify_crc(&b, &h).unwrap();
        h.check_producer_batch().unwrap();
    }

    #[test]
    fn an_empty_batch_spans_its_offsets_and_verifies() {
        let b = empty_batch(10, 19, 5);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_len(), b.len());
        assert_eq!(
            (h.base_offset, h.last_offset(), h.record_count),
            (10, 19, 0)
        );
        verify_crc(&b, &h).unwrap();
        let wide = BatchHeader::parse(&empty_batch(0, i64::MAX, 0)).unwrap();
        assert_eq!(wide.last_offset(), i32::MAX as i64);
    }

    #[test]
    fn patching_offset_and_epoch_keeps_crc_valid() {
        let mut b = build_batch(0, 5, &[b"x"]);
        patch_header(&mut b, 4242, 7).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 4242);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 4242);
        verify_crc(&b, &h).unwrap();
        assert!(patch_header(&mut b[..15], 1, 1).is_err());
        assert_eq!(BatchHeader::parse(&b).unwrap().base_offset, 4242);
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let mut b = build_batch(0, 5, &[b"hello"]);
        let last = b.len() - 3;
        b[last] ^= 0xff;
        let h = BatchHeader::parse(&b).unwrap();
        assert!(matches!(
            verify_crc(&b, &h),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(matches!(
            BatchHeader::parse(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            BatchHeader::parse(&b[..10]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_old_magic_and_bad_lengths() {
        let mut b = build_batch(0, 5, &[b"x"]);
        b[16] = 1;
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::UnsupportedMagic(1)));
        let mut b = build_batch(0, 5, &[b"x"]);
        b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::BadLength(-1)));
    }

    #[test]
    fn iterates_concatenated_batches_and_stops_on_error() {
        let mut buf = build_batch(0, 1, &[b"a"]);
        buf.extend(build_batch(1, 1, &[b"b", b"c"]));
        let n1 = buf.len();
        buf.extend_from_slice(&[0, 0, 0]);
        let items: Vec<_> = Batches::new(&buf).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].as_ref().unwrap().1.end, n1);
        assert!(items[2].is_err());
    }

    #[test]
    fn inconsistent_count_is_rejected_for_producers() {
        let mut b = build_batch(0, 1, &[b"a", b"b"]);
        b[57..61].copy_from_slice(&5i32.to_be_bytes());
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.check_producer_batch().is_err());
    }

    #[test]
    fn record_timestamps_of_plain_and_compressed_batches() {
        let b = build_batch(10, 1_000, &[b"a", b"b", b"c"]);
        assert_eq!(
            record_timestamps(&b),
            Some(vec![(10, 1_000), (11, 1_000), (12, 1_000)])
        );
        let mut gz = b.clone();
        gz[22] |= 1;
        assert_eq!(record_timestamps(&gz), None);
        let mut cut = b.clone();
        cut.truncate(b.len() - 2);
        assert_eq!(record_timestamps(&cut), None);
        let mut pos = 0;
        assert_eq!(read_varlong(&[0x03], &mut pos), Some(-2));
        assert_eq!(read_varlong(&[0xff; 11], &mut 0), None);
    }
}
