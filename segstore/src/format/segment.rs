//! The `.kfs` segment: a 32-byte header, the record batches, a 16-byte footer.
//! All integers big-endian (see docs/storage.md).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafscale_codec::batch::{patch_header, BatchError, BatchHeader, Batches};

pub const SEGMENT_HEADER_LEN: usize = 32;
pub const SEGMENT_FOOTER_LEN: usize = 16;
pub const SEGMENT_MAGIC: u32 = 0x4B41_4653; // "KAFS"
pub const FOOTER_MAGIC: u32 = 0x454E_4421; // "END!"
pub const SEGMENT_VERSION: u16 = 1;
/// A built segment's bytes start at this alignment in memory (see
/// `SegmentBuilder::new`): the block size `O_DIRECT` writes need.
pub const SEGMENT_ALIGN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported format version {0}")]
    BadVersion(u16),
    #[error("truncated: {have} bytes, need at least {need}")]
    Truncated { have: usize, need: usize },
    #[error("body CRC32C mismatch: footer {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("inconsistent segment: {0}")]
    Inconsistent(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: i64,
    pub message_count: i32,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFooter {
    pub crc: u32,
    pub last_offset: i64,
}

/// The `N` bytes at `at`, if `b` holds them.
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..)?.first_chunk::<N>().copied()
}

pub fn parse_header(b: &[u8]) -> Result<SegmentHeader, FormatError> {
    let truncated = || FormatError::Truncated {
        have: b.len(),
        need: SEGMENT_HEADER_LEN,
    };
    let h = b
        .first_chunk::<SEGMENT_HEADER_LEN>()
        .ok_or_else(truncated)?;
    // Within the 32 bytes just taken: never `None`.
    let u16_at = |at| {
        bytes_at(h, at)
            .map(u16::from_be_bytes)
            .ok_or_else(truncated)
    };
    let u32_at = |at| {
        bytes_at(h, at)
            .map(u32::from_be_bytes)
            .ok_or_else(truncated)
    };
    let i64_at = |at| {
        bytes_at(h, at)
            .map(i64::from_be_bytes)
            .ok_or_else(truncated)
    };
    let magic = u32_at(0)?;
    if magic != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    let version = u16_at(4)?;
    if version != SEGMENT_VERSION {
        return Err(FormatError::BadVersion(version));
    }
    Ok(SegmentHeader {
        base_offset: i64_at(8)?,
        message_count: u32_at(16)? as i32,
        created_ms: i64_at(20)?,
    })
}

/// Parses the last 16 bytes of a segment (`b` may be longer: its tail is used).
pub fn parse_footer(b: &[u8]) -> Result<SegmentFooter, FormatError> {
    let Some(&[c0, c1, c2, c3, o0, o1, o2, o3, o4, o5, o6, o7, m0, m1, m2, m3]) =
        b.last_chunk::<SEGMENT_FOOTER_LEN>()
    else {
        return Err(FormatError::Truncated {
            have: b.len(),
            need: SEGMENT_FOOTER_LEN,
        });
    };
    let magic = u32::from_be_bytes([m0, m1, m2, m3]);
    if magic != FOOTER_MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    Ok(SegmentFooter {
        crc: u32::from_be_bytes([c0, c1, c2, c3]),
        last_offset: i64::from_be_bytes([o0, o1, o2, o3, o4, o5, o6, o7]),
    })
}

/// Where one batch sits in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPos {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Absolute position in the segment, header included.
    pub pos: u32,
    pub len: u32,
    pub max_timestamp: i64,
}

/// A complete, verified segment held in memory.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The whole `.kfs` object.
    pub data: Bytes,
    pub base_offset: i64,
    pub last_offset: i64,
    pub message_count: i32,
    pub created_ms: i64,
    pub batches: Vec<BatchPos>,
}

impl Segment {
    /// Parses and verifies a `.kfs` object: header, footer, body CRC, and that the
    /// body is exactly a sequence of complete v2 batches.
    pub fn parse(data: Bytes) -> Result<Segment, FormatError> {
        let need = SEGMENT_HEADER_LEN + SEGMENT_FOOTER_LEN;
        if data.len() < need {
            return Err(FormatError::Truncated {
                have: data.len(),
                need,
            });
        }
        let header = parse_header(&data)?;
        let footer = parse_footer(&data)?;
        let body = data
            .get(SEGMENT_HEADER_LEN..data.len() - SEGMENT_FOOTER_LEN)
            .ok_or(FormatError::Truncated {
                have: data.len(),
                need,
            })?;
        let actual = crc32c::crc32c(body);
        if actual != footer.crc {
            return Err(FormatError::CrcMismatch {
                expected: footer.crc,
                actual,
            });
        }
        let mut batches = Vec::new();
        for item in Batches::new(body) {
            let (h, range) = item?;
            batches.push(BatchPos {
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                pos: (SEGMENT_HEADER_LEN + range.start) as u32,
                len: range.len() as u32,
                max_timestamp: h.max_timestamp,
            });
        }
        match (batches.first(), batches.last()) {
            (Some(first), Some(last)) => {
                if first.base_offset != header.base_offset || last.last_offset != footer.last_offset
                {
                    return Err(FormatError::Inconsistent(format!(
                        "batches span {}..={} but header/footer say {}..={}",
                        first.base_offset, last.last_offset, header.base_offset, footer.last_offset
                    )));
                }
            }
            _ => return Err(FormatError::Inconsistent("segment has no batches".into())),
        }
        Ok(Segment {
            data,
            base_offset: header.base_offset,
            last_offset: footer.last_offset,
            message_count: header.message_count,
            created_ms: header.created_ms,
            batches,
        })
    }

    /// Index into `batches` of the first batch whose last offset is `>= offset`.
    pub fn find(&self, offset: i64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.last_offset < offset);
        (i < self.batches.len()).then_some(i)
    }

    /// Zero-copy slice of whole batches from the one holding `offset`: at least one
    /// batch, then as many more as fit in `max_bytes`.
    pub fn slice_from(&self, offset: i64, max_bytes: usize) -> Option<Bytes> {
        let first = self.find(offset)?;
        let mut batches = self.batches.get(first..)?.iter();
        let head = batches.next()?;
        let start = head.pos as usize;
        let mut end = start + head.len as usize;
        for b in batches {
            let next = b.pos as usize + b.len as usize;
            if next - start > max_bytes {
                break;
            }
            end = next;
        }
        Some(self.data.slice(start..end))
    }

    pub fn size(&self) -> usize {
        self.data.len()
    }
}

/// A sealed segment: the `.kfs` bytes and its `.index`.
#[derive(Clone, Debug)]
pub struct SealedSegment {
    pub segment: Segment,
    pub index: Bytes,
}

/// Where a record batch's own CRC starts (it covers the rest of the batch).
const BATCH_CRC_FROM: usize = 21;
/// Batches at least this large extend the segment CRC by combining it with the
/// batch's CRC (under 100 ns, `crc::combine`) instead of hashing the bytes
/// again (about as long for 2 KiB, and linear in the size).
const COMBINE_FROM: usize = 2 << 10;

/// The in-memory active segment of one partition. Batches are copied in once,
/// with their offsets patched in the copy; `finish` adds header and footer in
/// place, so sealing does not copy the body again.
pub struct SegmentBuilder {
    buf: BytesMut,
    base_offset: i64,
    next_offset: i64,
    message_count: i32,
    crc: u32,
    created_ms: i64,
    batches: Vec<BatchPos>,
}

impl SegmentBuilder {
    pub fn new(base_offset: i64, created_ms: i64, capacity_hint: usize) -> Self {
        let mut buf = BytesMut::with_capacity(
            SEGMENT_ALIGN + SEGMENT_HEADER_LEN + capacity_hint + SEGMENT_FOOTER_LEN,
        );
        // Start the segment on a block boundary in memory, so that the local
        // store writes its whole blocks with O_DIRECT straight from these bytes
        // instead of copying them to an aligned buffer first (8% of a broker's
        // CPU at saturation). `advance` keeps the buffer's allocation and moves
        // its start; only growing past the capacity can lose the alignment,
        // and then the store copies as before.
        let skip = buf.as_ptr().align_offset(SEGMENT_ALIGN);
        if skip < SEGMENT_ALIGN {
            buf.put_bytes(0, skip);
            buf.advance(skip);
        }
        buf.put_bytes(0, SEGMENT_HEADER_LEN);
        SegmentBuilder {
            buf,
            base_offset,
            next_offset: base_offset,
            message_count: 0,
            crc: 0,
            created_ms,
            batches: Vec::new(),
        }
    }

    /// Appends one validated batch (its CRC checked against `header.crc`),
    /// assigning it the next offsets. Returns the
    /// assigned (base, last) offsets.
    ///
    /// `batch` is the whole batch `header` was parsed from, so it holds at least a
    /// batch header (`BatchHeader::parse` accepts nothing shorter).
    pub fn append(&mut self, batch: &[u8], header: &BatchHeader, leader_epoch: i32) -> (i64, i64) {
        let pos = self.buf.len();
        self.buf.extend_from_slice(batch);
        // From the old end of the buffer: never `None`.
        if let Some(copy) = self.buf.get_mut(pos..) {
            let patched = patch_header(copy, self.next_offset, leader_epoch);
            debug_assert!(patched.is_ok(), "a batch shorter than its header");
            self.crc = match copy.split_at_checked(BATCH_CRC_FROM) {
                Some((head, _)) if copy.len() >= COMBINE_FROM => {
                    // The producer's CRC already covers everything after the patched
                    // fields, and the caller verified it: combine instead of a second pass.
                    let head = crc32c::crc32c_append(self.crc, head);
                    super::crc::combine(head, header.crc, copy.len() - BATCH_CRC_FROM)
                }
                _ => crc32c::crc32c_append(self.crc, copy),
            };
        }
        let base = self.next_offset;
        let last = base + header.last_offset_delta as i64;
        self.batches.push(BatchPos {
            base_offset: base,
            last_offset: last,
            pos: pos as u32,
            len: batch.len() as u32,
            max_timestamp: header.max_timestamp,
        });
        self.message_count = self.message_count.saturating_add(header.record_count);
        self.next_offset = last + 1;
        (base, last)
    }

    /// Appends a batch of an existing segment with the offsets it has (the log
    /// cleaner's output keeps every offset where it was; the gaps between
    /// batches are the records it removed). `batch` is whole and its CRC valid;
    /// its base offset is at or after the builder's next offset.
    pub fn append_stored(&mut self, batch: &[u8], header: &BatchHeader) {
        let pos = self.buf.len();
        self.buf.extend_from_slice(batch);
        self.crc = crc32c::crc32c_append(self.crc, batch);
        if self.batches.is_empty() {
            self.base_offset = header.base_offset;
        }
        let last = header.last_offset();
        self.batches.push(BatchPos {
            base_offset: header.base_offset,
            last_offset: last,
            pos: pos as u32,
            len: batch.len() as u32,
            max_timestamp: header.max_timestamp,
        });
        self.message_count = self.message_count.saturating_add(header.record_count);
        self.next_offset = last + 1;
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn body_len(&self) -> usize {
        self.buf.len() - SEGMENT_HEADER_LEN
    }
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn finish(mut self, index_interval: i32) -> SealedSegment {
        let last_offset = self.next_offset - 1;
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..4].copy_from_slice(&SEGMENT_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
        h[8..16].copy_from_slice(&self.base_offset.to_be_bytes());
        h[16..20].copy_from_slice(&self.message_count.to_be_bytes());
        h[20..28].copy_from_slice(&self.created_ms.to_be_bytes());
        // `new` reserved the header's bytes at the start; fill them in now that the
        // count and base offset are known.
        if let Some(head) = self.buf.first_chunk_mut::<SEGMENT_HEADER_LEN>() {
            *head = h;
        }
        self.buf.put_u32(self.crc);
        self.buf.put_i64(last_offset);
        self.buf.put_u32(FOOTER_MAGIC);
        let index = super::index::encode_index(&self.batches, index_interval);
        SealedSegment {
            segment: Segment {
                data: self.buf.freeze(),
                base_offset: self.base_offset,
                last_offset,
                message_count: self.message_count,
                created_ms: self.created_ms,
                batches: self.batches,
            },
            index,
        }
    }
}

/// One segment holding the batches of `parts`, consecutive segments of one
/// partition in offset order (the commit log writes several small logged
/// segments out as one object). The bodies are copied once; the body CRC is
/// combined from the parts' footers, not recomputed. None if `parts` is empty.
pub fn coalesce(parts: &[&Segment], index_interval: i32) -> Option<SealedSegment> {
    let first = parts.first()?;
    let last = parts.last()?;
    let body: usize = parts
        .iter()
        .map(|p| {
            p.data
                .len()
                .saturating_sub(SEGMENT_HEADER_LEN + SEGMENT_FOOTER_LEN)
        })
        .sum();
    let mut b = SegmentBuilder::new(first.base_offset, first.created_ms, body);
    let mut batches = Vec::with_capacity(parts.iter().map(|p| p.batches.len()).sum());
    for p in parts {
        let part = p
            .data
            .get(SEGMENT_HEADER_LEN..p.data.len().checked_sub(SEGMENT_FOOTER_LEN)?)?;
        let shift = b.buf.len() as u32 - SEGMENT_HEADER_LEN as u32;
        let crc = parse_footer(&p.data).ok()?.crc;
        b.crc = super::crc::combine(b.crc, crc, part.len());
        b.buf.extend_from_slice(part);
        batches.extend(p.batches.iter().map(|x| BatchPos {
            pos: x.pos + shift,
            ..*x
        }));
        b.message_count = b.message_count.saturating_add(p.message_count);
    }
    b.batches = batches;
    b.next_offset = last.last_offset + 1;
    Some(b.finish(index_interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::{build_batch, verify_crc};

    fn built(batches: &[Vec<u8>]) -> SealedSegment {
        let mut b = SegmentBuilder::new(100, 42, 1024);
        for raw in batches {
            let h = BatchHeader::parse(raw).unwrap();
            b.append(raw, &h, 0);
        }
        b.finish(2)
    }

    #[test]
    fn coalesced_segments_are_the_segment_of_all_their_batches() {
        let raw = [
            build_batch(0, 1, &[b"a", b"b"]),
            build_batch(0, 2, &[b"c"]),
            build_batch(0, 3, &[b"d", b"e", b"f"]),
            build_batch(0, 4, &[&vec![9u8; COMBINE_FROM], b"g"]),
        ];
        let build = |base: i64, batches: &[Vec<u8>]| {
            let mut b = SegmentBuilder::new(base, 42, 16);
            for r in batches {
                b.append(r, &BatchHeader::parse(r).unwrap(), 0);
            }
            b.finish(2)
        };
        let whole = build(100, &raw);
        let parts = [
            build(100, &raw[..2]),
            build(103, &raw[2..3]),
            build(106, &raw[3..]),
        ];
        let refs: Vec<&Segment> = parts.iter().map(|p| &p.segment).collect();
        let c = coalesce(&refs, 2).unwrap();
        assert_eq!(c.segment.data, whole.segment.data);
        assert_eq!(c.index, whole.index);
        assert_eq!(c.segment.batches, whole.segment.batches);
        assert_eq!(
            (
                c.segment.base_offset,
                c.segment.last_offset,
                c.segment.message_count
            ),
            (100, 107, 8)
        );
        Segment::parse(c.segment.data.clone()).unwrap();
        // One part is itself.
        let one = coalesce(&refs[1..2], 2).unwrap();
        assert_eq!(one.segment.data, parts[1].segment.data);
        assert!(coalesce(&[], 2).is_none());
    }

    #[test]
    fn round_trip_patches_offsets_and_keeps_batch_crcs() {
        let s = built(&[
            build_batch(0, 1, &[b"a", b"b"]),
            build_batch(0, 2, &[b"c"]),
            build_batch(0, 3, &[b"d", b"e", b"f"]),
        ]);
        let p = Segment::parse(s.segment.data.clone()).unwrap();
        assert_eq!(
            (p.base_offset, p.last_offset, p.message_count, p.created_ms),
            (100, 105, 6, 42)
        );
        assert_eq!(
            p.batches
                .iter()
                .map(|b| (b.base_offset, b.last_offset))
                .collect::<Vec<_>>(),
            vec![(100, 101), (102, 102), (103, 105)]
        );
        assert_eq!(p.batches, s.segment.batches);
        for b in &p.batches {
            let raw = &p.data[b.pos as usize..(b.pos + b.len) as usize];
            let h = BatchHeader::parse(raw).unwrap();
            assert_eq!(h.base_offset, b.base_offset);
            verify_crc(raw, &h).unwrap();
        }
        assert_eq!(parse_footer(&p.data).unwrap().last_offset, 105);
    }

    #[test]
    fn footer_crc_is_the_body_crc_when_large_batches_are_combined() {
        let big = vec![7u8; COMBINE_FROM];
        let s = built(&[
            build_batch(0, 1, &[b"small"]),
            build_batch(0, 2, &[&big, b"x"]),
            build_batch(0, 3, &[b"tail"]),
            build_batch(0, 4, &[&big]),
        ]);
        let d = &s.segment.data;
        let body = &d[SEGMENT_HEADER_LEN..d.len() - SEGMENT_FOOTER_LEN];
        assert_eq!(parse_footer(d).unwrap().crc, crc32c::crc32c(body));
        Segment::parse(d.clone()).unwrap();
    }

    #[test]
    fn built_segments_start_on_a_block_boundary() {
        // Within the capacity asked for, and for an empty hint that grows.
        for hint in [64, 1 << 20] {
            let mut b = SegmentBuilder::new(100, 7, hint);
            let raw = build_batch(0, 1, &[&[5u8; 1000]]);
            for _ in 0..20 {
                b.append(&raw, &BatchHeader::parse(&raw).unwrap(), 0);
            }
            let s = b.finish(2);
            if hint > 20 * raw.len() {
                assert_eq!(s.segment.data.as_ptr().align_offset(SEGMENT_ALIGN), 0);
            }
            let parsed = Segment::parse(s.segment.data.clone()).unwrap();
            assert_eq!((parsed.base_offset, parsed.last_offset), (100, 119));
        }
    }

    #[test]
    fn slices_whole_batches() {
        let s = built(&[
            build_batch(0, 1, &[b"a", b"b"]),
            build_batch(0, 2, &[b"c"]),
            build_batch(0, 3, &[b"d"]),
        ])
        .segment;
        let first_len = s.batches[0].len as usize;
        // From the middle of the first batch: the whole first batch, at least.
        assert_eq!(s.slice_from(101, 1).unwrap().len(), first_len);
        let all = s.slice_from(100, usize::MAX).unwrap();
        assert_eq!(
            all.len(),
            s.size() - SEGMENT_HEADER_LEN - SEGMENT_FOOTER_LEN
        );
        assert_eq!(
            s.slice_from(103, 1 << 20).unwrap().len(),
            s.batches[2].len as usize
        );
        assert!(s.slice_from(104, 100).is_none());
        assert_eq!(s.slice_from(0, 1 << 20).unwrap().len(), all.len());
    }

    #[test]
    fn detects_corruption_truncation_and_bad_magic() {
        let s = built(&[build_batch(0, 1, &[b"hello"])]).segment;
        let mut v = s.data.to_vec();
        v[SEGMENT_HEADER_LEN + 30] ^= 0x40;
        assert!(matches!(
            Segment::parse(Bytes::from(v)),
            Err(FormatError::CrcMismatch { .. })
        ));
        let v = s.data[..s.size() - 3].to_vec();
        assert!(Segment::parse(Bytes::from(v)).is_err());
        let mut v = s.data.to_vec();
        v[0] = b'X';
        assert!(matches!(
            Segment::parse(Bytes::from(v)),
            Err(FormatError::BadMagic(_))
        ));
        assert!(matches!(
            Segment::parse(Bytes::from_static(b"short")),
            Err(FormatError::Truncated { .. })
        ));
    }
}
