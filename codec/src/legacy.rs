//! Message sets of magic 0 and 1, the formats before Kafka 0.11, which Produce
//! v0-2 and Fetch v0-3 carry. The log stores only v2 batches: a produced
//! message set becomes one v2 batch here, and stored batches become a message
//! set for an old fetcher, as Kafka converts them.
//!
//! Message set: entries of offset i64, message size i32, message. Message:
//! crc u32 (CRC-32, IEEE, of the rest), magic i8, attributes i8 (codec in bits
//! 0-2; magic 1: bit 3 LogAppendTime), timestamp i64 (magic 1 only), key and
//! value as bytes (i32 length, -1: null). A compressed message ("wrapper")
//! holds, as its value, the compressed message set of its inner messages.
//!
//! Produce (`to_v2`): every message's CRC is checked; the inner messages of
//! wrappers are unpacked; the records keep their keys, values (null too) and
//! timestamps (magic 0 has none: -1, as in Kafka; a LogAppendTime wrapper
//! gives its own to its inner messages); the producer's offsets are dropped, as
//! the log assigns them. The batch is compressed again with the wrappers' codec
//! (Kafka's `compression.type=producer`).
//!
//! Fetch (`from_v2`): every record at or after the fetch offset becomes one
//! uncompressed message of the client's magic (headers dropped, as Kafka
//! does). Compressed batches are decompressed and sent uncompressed rather than
//! compressed again: it saves the broker the recompression, and an old client
//! reads them even if it lacks the codec (kafka-python without python-snappy).
//! zstd batches are refused (`Unsupported`), as Kafka refuses them below Fetch
//! v10. Control batches carry no user records and are skipped; a batch cut at
//! the end of the read is dropped (the client asks again from there).

use bytes::Bytes;

use crate::batch::{BatchHeader, Batches, HEADER_LEN};
use crate::compression::{self, CompressionError};
use crate::records::{assemble, encode_record, parse_records};

/// Where a message set's and a v2 batch's magic byte is.
pub const MAGIC_AT: usize = 16;
const CODEC_MASK: u8 = 0x07;
const LOG_APPEND_TIME: u8 = 0x08;
/// offset i64 + message size i32 before every message.
const ENTRY_OVERHEAD: usize = 12;
/// crc u32 + magic i8 + attributes i8.
const MESSAGE_HEAD: usize = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacyError {
    #[error("message set truncated")]
    Truncated,
    #[error("message CRC mismatch: message {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("message magic {0} is not 0 or 1")]
    BadMagic(i8),
    #[error("compressed message inside a compressed message")]
    Nested,
    #[error("compressed message without a value")]
    NullWrapper,
    #[error("message set holds no message")]
    Empty,
    #[error("stored batch's records are malformed")]
    BadBatch,
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

/// Whether `records` starts with a message of magic 0 or 1 (Produce v0-2 may
/// carry v2 batches too, which need no conversion).
pub fn is_legacy(records: &[u8]) -> bool {
    matches!(records.get(MAGIC_AT), Some(0 | 1))
}

/// CRC-32 (IEEE), the checksum of magic 0/1 messages.
fn crc32(b: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(b);
    c.sum()
}

struct Message {
    magic: u8,
    attributes: u8,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(*b.get(at..)?.first_chunk::<4>()?))
}

fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(*b.get(at..)?.first_chunk::<8>()?))
}

/// The messages of a message set (each from its crc on). A message cut at the
/// end is an error: a producer sends whole messages.
fn entries(set: &Bytes) -> Result<Vec<Bytes>, LegacyError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < set.len() {
        let size = i32_at(set, pos + 8).ok_or(LegacyError::Truncated)?;
        let size = usize::try_from(size).map_err(|_| LegacyError::Truncated)?;
        let start = pos + ENTRY_OVERHEAD;
        let end = start.checked_add(size).ok_or(LegacyError::Truncated)?;
        if end > set.len() || size < MESSAGE_HEAD {
            return Err(LegacyError::Truncated);
        }
        out.push(set.slice(start..end));
        pos = end;
    }
    Ok(out)
}

/// Reads a bytes field (i32 length, -1: null) at `*pos`.
fn bytes_field(m: &Bytes, pos: &mut usize) -> Result<Option<Bytes>, LegacyError> {
    let len = i32_at(m, *pos).ok_or(LegacyError::Truncated)?;
    *pos += 4;
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    let end = pos.checked_add(len).ok_or(LegacyError::Truncated)?;
    if end > m.len() {
        return Err(LegacyError::Truncated);
    }
    let b = m.slice(*pos..end);
    *pos = end;
    Ok(Some(b))
}

/// Parses one message, checking its CRC.
fn parse_message(m: &Bytes) -> Result<Message, LegacyError> {
    let expected = i32_at(m, 0).ok_or(LegacyError::Truncated)? as u32;
    let actual = crc32(m.get(4..).unwrap_or_default());
    if expected != actual {
        return Err(LegacyError::CrcMismatch { expected, actual });
    }
    let magic = *m.get(4).ok_or(LegacyError::Truncated)?;
    let attributes = *m.get(5).ok_or(LegacyError::Truncated)?;
    let mut pos = MESSAGE_HEAD;
    let timestamp = match magic {
        0 => -1,
        1 => {
            pos += 8;
            i64_at(m, MESSAGE_HEAD).ok_or(LegacyError::Truncated)?
        }
        other => return Err(LegacyError::BadMagic(other as i8)),
    };
    let key = bytes_field(m, &mut pos)?;
    let value = bytes_field(m, &mut pos)?;
    Ok(Message {
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}

/// Converts a produced message set of magic 0/1 into one v2 batch (base
/// offset 0, no producer id), compressed with the wrappers' codec. `limit`
/// bounds what compressed messages may expand to, in all.
pub fn to_v2(set: &Bytes, limit: usize) -> Result<Vec<u8>, LegacyError> {
    let mut recs: Vec<(i64, Option<Bytes>, Option<Bytes>)> = Vec::new();
    let mut codec = compression::NONE;
    let mut expanded = 0usize;
    for m in entries(set)? {
        let msg = parse_message(&m)?;
        let c = msg.attributes & CODEC_MASK;
        if c == compression::NONE {
            recs.push((msg.timestamp, msg.key, msg.value));
            continue;
        }
        if codec == compression::NONE {
            codec = c;
        }
        let value = msg.value.ok_or(LegacyError::NullWrapper)?;
        let inner = compression::decompress(c, &value, limit.saturating_sub(expanded))?;
        expanded += inner.len();
        let stamp =
            (msg.magic == 1 && msg.attributes & LOG_APPEND_TIME != 0).then_some(msg.timestamp);
        for im in entries(&Bytes::from(inner))? {
            let i = parse_message(&im)?;
            if i.attributes & CODEC_MASK != compression::NONE {
                return Err(LegacyError::Nested);
            }
            recs.push((stamp.unwrap_or(i.timestamp), i.key, i.value));
        }
    }
    let (Some(first), Some(max_ts)) = (recs.first(), recs.iter().map(|r| r.0).max()) else {
        return Err(LegacyError::Empty);
    };
    let base_ts = first.0;
    let mut body = Vec::with_capacity(set.len() + recs.len() * 8);
    for (i, (ts, k, v)) in recs.iter().enumerate() {
        encode_record(
            &mut body,
            ts.saturating_sub(base_ts),
            i as i64,
            k.as_deref(),
            v.as_deref(),
        );
    }
    let body = compression::compress(codec, &body)?;
    let n = recs.len() as i32;
    let h = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: codec as i16,
        last_offset_delta: n - 1,
        base_timestamp: base_ts,
        max_timestamp: max_ts,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: n,
    };
    Ok(assemble(&h, codec as i16, base_ts, n, &body))
}

/// Appends one uncompressed message of `magic` at `offset`.
fn put_message(
    out: &mut Vec<u8>,
    magic: u8,
    offset: i64,
    log_append_time: bool,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    out.extend_from_slice(&offset.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&[0; 8]); // size and crc, filled in below
    let from = out.len();
    out.push(magic);
    if magic == 1 {
        out.push(if log_append_time { LOG_APPEND_TIME } else { 0 });
        out.extend_from_slice(&timestamp.to_be_bytes());
    } else {
        out.push(0);
    }
    for field in [key, value] {
        match field {
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let crc = crc32(out.get(from..).unwrap_or_default());
    let size = (out.len() - from + 4) as i32;
    if let Some(head) = out.get_mut(size_at..from) {
        head.copy_from_slice(&[size.to_be_bytes(), crc.to_be_bytes()].concat());
    }
}

/// Converts stored v2 batches into a message set of `magic` (0 or 1) holding
/// the records at or after `from_offset`. `limit` bounds what one compressed
/// batch may expand to.
pub fn from_v2(
    stored: &[u8],
    magic: u8,
    from_offset: i64,
    limit: usize,
) -> Result<Vec<u8>, LegacyError> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 2);
    for item in Batches::new(stored) {
        let Ok((h, range)) = item else { break };
        if h.is_control() || h.last_offset() < from_offset {
            continue;
        }
        let section = stored
            .get(range)
            .and_then(|b| b.get(HEADER_LEN..))
            .ok_or(LegacyError::BadBatch)?;
        let expanded;
        let section = match h.compression() as u8 {
            compression::NONE => section,
            c => {
                expanded = compression::decompress(c, section, limit)?;
                expanded.as_slice()
            }
        };
        let log_append_time = h.attributes & i16::from(LOG_APPEND_TIME) != 0;
        for r in parse_records(section, &h).ok_or(LegacyError::BadBatch)? {
            if r.offset >= from_offset {
                put_message(
                    &mut out,
                    magic,
                    r.offset,
                    log_append_time,
                    r.timestamp,
                    r.key,
                    r.value,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::verify_crc;
    use crate::records::records;

    /// A message as an old client writes it, built field by field.
    fn message(magic: u8, attrs: u8, ts: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
        let mut m = vec![magic, attrs];
        if magic == 1 {
            m.extend_from_slice(&ts.to_be_bytes());
        }
        for f in [key, value] {
            match f {
                Some(b) => {
                    m.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    m.extend_from_slice(b);
                }
                None => m.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut out = crc32(&m).to_be_bytes().to_vec();
        out.extend_from_slice(&m);
        out
    }

    fn entry(offset: i64, msg: &[u8]) -> Vec<u8> {
        let mut e = offset.to_be_bytes().to_vec();
        e.extend_from_slice(&(msg.len() as i32).to_be_bytes());
        e.extend_from_slice(msg);
        e
    }

    /// (offset, timestamp, key, value) of a stored record.
    type Row = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn stored(batch: &[u8]) -> Vec<Row> {
        let h = BatchHeader::parse(batch).unwrap();
        verify_crc(batch, &h).unwrap();
        let section = batch.get(HEADER_LEN..).unwrap();
        let plain;
        let section = if h.compression() == 0 {
            section
        } else {
            plain = compression::decompress(h.compression() as u8, section, 1 << 20).unwrap();
            &plain[..]
        };
        parse_records(section, &h)
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                )
            })
            .collect()
    }

    fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    /// Message sets written by kafka-python 2.2's `LegacyRecordBatchBuilder`
    /// (an implementation independent of this one), CRCs included.
    const KP_MAGIC0: &str = "000000000000000000000014a4cdab3a0000000000016b0000000568656c6c6f\
                             00000000000000010000000f35b492f20000ffffffff0000000178";
    const KP_MAGIC1: &str = "00000000000000000000001caa1f677901000000018bcfe56800000000016b00\
                             00000568656c6c6f000000000000000100000016ea764b5401000000018bcfe5\
                             6805ffffffffffffffff";
    const KP_GZIP: &str = "000000000000000000000052e271940401010000000000000000ffffffff0000\
                           003c1f8b080094680d6b02ff636080038902d6ea34462083b1fbfcd30c900863\
                           22883084ca83a4247acd19bec1d57081184920c20800bf3e082548000000";

    #[test]
    fn message_sets_from_another_implementation_convert() {
        let b = to_v2(&hex(KP_MAGIC0), 1 << 20).unwrap();
        assert_eq!(
            stored(&b),
            vec![
                (0, -1, Some(b"k".to_vec()), Some(b"hello".to_vec())),
                (1, -1, None, Some(b"x".to_vec())),
            ]
        );
        let b = to_v2(&hex(KP_MAGIC1), 1 << 20).unwrap();
        assert_eq!(
            stored(&b),
            vec![
                (
                    0,
                    1_700_000_000_000,
                    Some(b"k".to_vec()),
                    Some(b"hello".to_vec())
                ),
                (1, 1_700_000_000_005, None, None),
            ]
        );
        let b = to_v2(&hex(KP_GZIP), 1 << 20).unwrap();
        assert_eq!(
            BatchHeader::parse(&b).unwrap().compression() as u8,
            compression::GZIP
        );
        assert_eq!(
            stored(&b),
            vec![
                (
                    0,
                    1_700_000_000_000,
                    Some(b"a".to_vec()),
                    Some(b"1".to_vec())
                ),
                (
                    1,
                    1_700_000_000_010,
                    Some(b"b".to_vec()),
                    Some(b"2".to_vec())
                ),
            ]
        );
        // And back: the stored batches give the same bytes kafka-python wrote.
        let b = to_v2(&hex(KP_MAGIC1), 1 << 20).unwrap();
        assert_eq!(from_v2(&b, 1, 0, 1 << 20).unwrap(), hex(KP_MAGIC1));
        let b = to_v2(&hex(KP_MAGIC0), 1 << 20).unwrap();
        assert_eq!(from_v2(&b, 0, 0, 1 << 20).unwrap(), hex(KP_MAGIC0));
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn an_uncompressed_magic_1_set_becomes_one_batch() {
        let mut set = entry(0, &message(1, 0, 1_000, Some(b"k1"), Some(b"v1")));
        set.extend(entry(1, &message(1, 0, 1_005, None, Some(b"v2"))));
        set.extend(entry(2, &message(1, 0, 999, Some(b"k3"), None)));
        let b = to_v2(&Bytes::from(set), 1 << 20).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.compression()),
            (3, 2, 0)
        );
        assert_eq!(
            (h.base_timestamp, h.max_timestamp, h.producer_id),
            (1_000, 1_005, -1)
        );
        h.check_producer_batch().unwrap();
        assert_eq!(
            stored(&b),
            vec![
                (0, 1_000, Some(b"k1".to_vec()), Some(b"v1".to_vec())),
                (1, 1_005, None, Some(b"v2".to_vec())),
                (2, 999, Some(b"k3".to_vec()), None),
            ]
        );
        assert!(records(&b, &h).is_some());
    }

    #[test]
    fn magic_0_records_have_no_timestamp() {
        let set = entry(7, &message(0, 0, 0, Some(b"k"), Some(b"v")));
        assert!(is_legacy(&set));
        let b = to_v2(&Bytes::from(set), 1 << 20).unwrap();
        assert_eq!(
            stored(&b),
            vec![(0, -1, Some(b"k".to_vec()), Some(b"v".to_vec()))]
        );
    }

    #[test]
    fn compressed_wrappers_are_unpacked_and_compressed_again() {
        for codec in [compression::GZIP, compression::SNAPPY, compression::LZ4] {
            let mut inner = entry(0, &message(1, 0, 50, Some(b"a"), Some(b"1")));
            inner.extend(entry(1, &message(1, 0, 60, Some(b"b"), Some(b"2"))));
            let packed = compression::compress(codec, &inner).unwrap();
            let mut set = entry(1, &message(1, codec, 60, None, Some(&packed)));
            // A second, uncompressed message after the wrapper.
            set.extend(entry(2, &message(1, 0, 70, None, Some(b"3"))));
            let b = to_v2(&Bytes::from(set), 1 << 20).unwrap();
            let h = BatchHeader::parse(&b).unwrap();
            assert_eq!(h.compression() as u8, codec);
            assert_eq!(
                stored(&b),
                vec![
                    (0, 50, Some(b"a".to_vec()), Some(b"1".to_vec())),
                    (1, 60, Some(b"b".to_vec()), Some(b"2".to_vec())),
                    (2, 70, None, Some(b"3".to_vec())),
                ],
                "codec {codec}"
            );
            // A LogAppendTime wrapper stamps its inner messages.
            let set = entry(
                1,
                &message(1, codec | LOG_APPEND_TIME, 99, None, Some(&packed)),
            );
            let b = to_v2(&Bytes::from(set), 1 << 20).unwrap();
            assert_eq!(
                stored(&b).iter().map(|r| r.1).collect::<Vec<_>>(),
                vec![99, 99]
            );
            // The expansion limit holds.
            let set = Bytes::from(entry(1, &message(1, codec, 60, None, Some(&packed))));
            assert!(matches!(
                to_v2(&set, 10),
                Err(LegacyError::Compression(CompressionError::TooLarge(10)))
            ));
        }
    }

    #[test]
    fn bad_messages_are_refused() {
        let good = entry(0, &message(1, 0, 1, None, Some(b"v")));
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        assert!(matches!(
            to_v2(&Bytes::from(bad_crc), 1 << 20),
            Err(LegacyError::CrcMismatch { .. })
        ));
        assert_eq!(
            to_v2(&Bytes::from(good[..good.len() - 1].to_vec()), 1 << 20),
            Err(LegacyError::Truncated)
        );
        assert_eq!(to_v2(&Bytes::new(), 1 << 20), Err(LegacyError::Empty));
        // A key longer than its message.
        let mut m = message(0, 0, 0, Some(b"k"), None);
        m[9] = 99;
        let c = crc32(&m[4..]).to_be_bytes();
        m[..4].copy_from_slice(&c);
        assert_eq!(
            to_v2(&Bytes::from(entry(0, &m)), 1 << 20),
            Err(LegacyError::Truncated)
        );
        // A compressed message inside a compressed one; a null wrapper.
        let inner = entry(0, &message(1, compression::GZIP, 1, None, Some(b"x")));
        let packed = compression::compress(compression::GZIP, &inner).unwrap();
        let set = entry(0, &message(1, compression::GZIP, 1, None, Some(&packed)));
        assert_eq!(to_v2(&Bytes::from(set), 1 << 20), Err(LegacyError::Nested));
        let set = entry(0, &message(1, compression::GZIP, 1, None, None));
        assert_eq!(
            to_v2(&Bytes::from(set), 1 << 20),
            Err(LegacyError::NullWrapper)
        );
        let set = entry(0, &message(2, 0, 1, None, Some(b"v")));
        assert_eq!(
            to_v2(&Bytes::from(set), 1 << 20),
            Err(LegacyError::BadMagic(2))
        );
    }

    #[test]
    fn stored_batches_become_messages_from_the_fetch_offset() {
        let mut log = crate::records::build_keyed_batch(
            10,
            5_000,
            &[
                (Some(b"a"), Some(b"1")),
                (None, Some(b"2")),
                (Some(b"c"), None),
            ],
        );
        log.extend(crate::batch::build_batch(13, 6_000, &[b"4"]));
        for magic in [0u8, 1] {
            let set = from_v2(&log, magic, 11, 1 << 20).unwrap();
            let ts = |t: i64| if magic == 1 { t } else { 0 };
            let expect = [
                entry(11, &message(magic, 0, ts(5_000), None, Some(b"2"))),
                entry(12, &message(magic, 0, ts(5_000), Some(b"c"), None)),
                entry(13, &message(magic, 0, ts(6_000), None, Some(b"4"))),
            ]
            .concat();
            assert_eq!(set, expect, "magic {magic}");
        }
        // Round trip through the produce side.
        let back = to_v2(&Bytes::from(from_v2(&log, 1, 0, 1 << 20).unwrap()), 1 << 20).unwrap();
        assert_eq!(
            stored(&back)
                .iter()
                .map(|r| (r.1, r.3.clone()))
                .collect::<Vec<_>>(),
            vec![
                (5_000, Some(b"1".to_vec())),
                (5_000, Some(b"2".to_vec())),
                (5_000, None),
                (6_000, Some(b"4".to_vec()))
            ]
        );
        // A cut batch at the end is dropped; nothing past the end is an empty set.
        let first_batch_only = from_v2(&log, 1, 0, 1 << 20).unwrap();
        let cut = from_v2(&log[..log.len() - 3], 1, 0, 1 << 20).unwrap();
        assert_eq!(cut, first_batch_only[..cut.len()]);
        assert_eq!(
            cut.len(),
            first_batch_only.len() - entry(13, &message(1, 0, 0, None, Some(b"4"))).len()
        );
        assert!(from_v2(&log, 1, 14, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn compressed_and_log_append_time_batches_are_converted_zstd_refused() {
        let plain = crate::records::build_keyed_batch(0, 7, &[(Some(b"k"), Some(b"v"))]);
        let h = BatchHeader::parse(&plain).unwrap();
        let section = &plain[HEADER_LEN..];
        let gz = compression::compress(compression::GZIP, section).unwrap();
        let b = assemble(&h, compression::GZIP as i16, 7, 1, &gz);
        assert_eq!(
            from_v2(&b, 1, 0, 1 << 20).unwrap(),
            entry(0, &message(1, 0, 7, Some(b"k"), Some(b"v")))
        );
        let lat = assemble(
            &BatchHeader {
                max_timestamp: 42,
                ..h
            },
            0x08,
            7,
            1,
            section,
        );
        assert_eq!(
            from_v2(&lat, 1, 0, 1 << 20).unwrap(),
            entry(0, &message(1, LOG_APPEND_TIME, 42, Some(b"k"), Some(b"v")))
        );
        let zstd = assemble(&h, compression::ZSTD as i16, 7, 1, section);
        assert_eq!(
            from_v2(&zstd, 1, 0, 1 << 20),
            Err(LegacyError::Compression(CompressionError::Unsupported(4)))
        );
    }
}
