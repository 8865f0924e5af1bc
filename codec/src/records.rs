//! The records inside an uncompressed v2 batch, for the log cleaner: read each
//! record's offset, timestamp, key and whether its value is null, and build a
//! batch again from the records that stay (docs/compaction.md).
//!
//! Record layout (after the batch header): length varint, attributes i8,
//! timestampDelta varlong, offsetDelta varint, keyLength varint (-1: null),
//! key, valueLength varint (-1: null, a tombstone), value, header count varint,
//! headers.

use crate::batch::{BatchHeader, CRC_FROM, HEADER_LEN, LOG_OVERHEAD};

/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const LOG_APPEND_TIME: i16 = 0x08;
/// KIP-534: the batch's base timestamp is its delete horizon: tombstones in it
/// may be removed by a cleaning after that time.
pub const DELETE_HORIZON: i16 = 0x40;

/// One record of an uncompressed batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    /// The record's timestamp (a LogAppendTime batch's max timestamp).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The value is null: a tombstone.
    pub tombstone: bool,
    attributes: u8,
    /// The record's bytes from its offsetDelta to its end (kept as they are).
    tail: &'a [u8],
    /// The whole record, its length prefix included.
    whole: &'a [u8],
    ts_delta: i64,
}

/// Reads a zigzag varint at `*pos`, advancing it.
pub(crate) fn read_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
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

pub(crate) fn write_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Whether the batch's records can be read without decompressing them.
pub fn readable(h: &BatchHeader) -> bool {
    h.attributes & COMPRESSION_MASK == 0 && !h.is_control()
}

/// The records of one uncompressed, non-control v2 batch (`batch` holds exactly
/// the batch `h` was parsed from). `None` for a compressed or control batch or
/// a malformed record section.
pub fn records<'a>(batch: &'a [u8], h: &BatchHeader) -> Option<Vec<Record<'a>>> {
    if !readable(h) {
        return None;
    }
    parse_records(batch.get(HEADER_LEN..h.total_len())?, h)
}

/// The records of a batch's record section: the bytes after its header, or
/// what they decompress to. `None` if the section does not hold `h`'s records.
pub fn parse_records<'a>(body: &'a [u8], h: &BatchHeader) -> Option<Vec<Record<'a>>> {
    let mut pos = 0;
    let count = usize::try_from(h.record_count).ok()?;
    let mut out = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        let start = pos;
        let len = usize::try_from(read_varlong(body, &mut pos)?).ok()?;
        let record_end = pos.checked_add(len)?;
        let record = body.get(pos..record_end)?;
        let attributes = *record.first()?;
        let mut at = 1;
        let ts_delta = read_varlong(record, &mut at)?;
        let tail_from = at;
        let offset_delta = read_varlong(record, &mut at)?;
        let key_len = read_varlong(record, &mut at)?;
        let key = if key_len < 0 {
            None
        } else {
            let end = at.checked_add(usize::try_from(key_len).ok()?)?;
            let k = record.get(at..end)?;
            at = end;
            Some(k)
        };
        let value_len = read_varlong(record, &mut at)?;
        let value = if value_len < 0 {
            None
        } else {
            let end = at.checked_add(usize::try_from(value_len).ok()?)?;
            Some(record.get(at..end)?)
        };
        let timestamp = if h.attributes & LOG_APPEND_TIME != 0 {
            h.max_timestamp
        } else {
            h.base_timestamp.saturating_add(ts_delta)
        };
        out.push(Record {
            offset: h.base_offset.saturating_add(offset_delta),
            timestamp,
            key,
            value,
            tombstone: value.is_none(),
            attributes,
            tail: record.get(tail_from..)?,
            whole: body.get(start..record_end)?,
            ts_delta,
        });
        pos = record_end;
    }
    Some(out)
}

/// Appends one record without headers, its length prefix included.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    ts_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut r = Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
    r.push(0);
    write_varlong(&mut r, ts_delta);
    write_varlong(&mut r, offset_delta);
    for field in [key, value] {
        match field {
            Some(b) => {
                write_varlong(&mut r, b.len() as i64);
                r.extend_from_slice(b);
            }
            None => write_varlong(&mut r, -1),
        }
    }
    write_varlong(&mut r, 0);
    write_varlong(out, r.len() as i64);
    out.extend_from_slice(&r);
}

/// A batch with `header`'s offsets, producer fields and sequence (so consumers
/// and producer state see the same offsets as before) holding only `kept`
/// records of it. With `horizon` the batch is marked with that delete horizon
/// (KIP-534: attribute bit 6, the base timestamp is the horizon and the
/// records' timestamp deltas are taken from it, so their timestamps stay what
/// they were). `kept` may be empty: Kafka's cleaner keeps such a batch as the
/// last one of an active idempotent producer.
pub fn rebuild(h: &BatchHeader, kept: &[Record<'_>], horizon: Option<i64>) -> Vec<u8> {
    let base_ts = horizon.unwrap_or(h.base_timestamp);
    let mut records = Vec::new();
    for r in kept {
        if horizon.is_none() {
            records.extend_from_slice(r.whole);
            continue;
        }
        // The record as it was, with its timestamp delta taken from the horizon.
        let original = h.base_timestamp.saturating_add(r.ts_delta);
        let mut body = Vec::with_capacity(r.tail.len() + 11);
        body.push(r.attributes);
        write_varlong(&mut body, original.saturating_sub(base_ts));
        body.extend_from_slice(r.tail);
        write_varlong(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut attributes = h.attributes & !COMPRESSION_MASK;
    if horizon.is_some() {
        attributes |= DELETE_HORIZON;
    }
    assemble(h, attributes, base_ts, kept.len() as i32, &records)
}

/// A v2 batch of `h`'s offsets, producer fields and max timestamp around
/// `records` (already encoded), with its CRC.
pub(crate) fn assemble(
    h: &BatchHeader,
    attributes: i16,
    base_ts: i64,
    count: i32,
    records: &[u8],
) -> Vec<u8> {
    let mut covered = Vec::with_capacity(HEADER_LEN - CRC_FROM + records.len());
    covered.extend_from_slice(&attributes.to_be_bytes());
    covered.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    covered.extend_from_slice(&base_ts.to_be_bytes());
    covered.extend_from_slice(&h.max_timestamp.to_be_bytes());
    covered.extend_from_slice(&h.producer_id.to_be_bytes());
    covered.extend_from_slice(&h.producer_epoch.to_be_bytes());
    covered.extend_from_slice(&h.base_sequence.to_be_bytes());
    covered.extend_from_slice(&count.to_be_bytes());
    covered.extend_from_slice(records);
    let mut b = Vec::with_capacity(CRC_FROM + covered.len());
    b.extend_from_slice(&h.base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
    b.extend_from_slice(&covered);
    b
}

/// The delete horizon a batch carries (KIP-534), if any.
pub fn delete_horizon(h: &BatchHeader) -> Option<i64> {
    (h.attributes & DELETE_HORIZON != 0).then_some(h.base_timestamp)
}

/// A record's key and value (None: null) for `build_keyed_batch`.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds an uncompressed v2 batch of keyed records, `None` values being
/// tombstones (test and benchmark helper).
pub fn build_keyed_batch(base_offset: i64, timestamp: i64, records: &[KeyValue<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        encode_record(&mut body, 0, i as i64, *k, *v);
    }
    let n = records.len() as i32;
    let h = BatchHeader {
        base_offset,
        batch_length: 0,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: n - 1,
        base_timestamp: timestamp,
        max_timestamp: timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: n,
    };
    assemble(&h, 0, timestamp, n, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_and_tombstones_and_rebuilds_a_subset() {
        let b = build_keyed_batch(
            100,
            1_000,
            &[
                (Some(b"k1"), Some(b"v1")),
                (None, Some(b"nokey")),
                (Some(b"k2"), None),
                (Some(b"k1"), Some(b"v2")),
            ],
        );
        let h = BatchHeader::parse(&b).unwrap();
        crate::batch::verify_crc(&b, &h).unwrap();
        let rs = records(&b, &h).unwrap();
        assert_eq!(rs.len(), 4);
        assert_eq!(
            rs.iter()
                .map(|r| (r.offset, r.key, r.tombstone))
                .collect::<Vec<_>>(),
            vec![
                (100, Some(&b"k1"[..]), false),
                (101, None, false),
                (102, Some(&b"k2"[..]), true),
                (103, Some(&b"k1"[..]), false),
            ]
        );
        // Keep the tombstone and the newest k1, marking a delete horizon.
        let kept = [rs[2], rs[3]];
        let out = rebuild(&h, &kept, Some(9_000));
        let h2 = BatchHeader::parse(&out).unwrap();
        crate::batch::verify_crc(&out, &h2).unwrap();
        assert_eq!(
            (h2.base_offset, h2.last_offset(), h2.record_count),
            (100, 103, 2)
        );
        assert_eq!(delete_horizon(&h2), Some(9_000));
        let again = records(&out, &h2).unwrap();
        assert_eq!(
            again
                .iter()
                .map(|r| (r.offset, r.timestamp, r.key, r.tombstone))
                .collect::<Vec<_>>(),
            vec![
                (102, 1_000, Some(&b"k2"[..]), true),
                (103, 1_000, Some(&b"k1"[..]), false),
            ]
        );
        // Without a horizon the records are copied as they are; an empty batch
        // keeps the offsets it spans.
        let plain = rebuild(&h, &[rs[0]], None);
        let hp = BatchHeader::parse(&plain).unwrap();
        assert_eq!(
            (hp.base_offset, hp.last_offset(), delete_horizon(&hp)),
            (100, 103, None)
        );
        let empty = rebuild(&h, &[], None);
        let he = BatchHeader::parse(&empty).unwrap();
        crate::batch::verify_crc(&empty, &he).unwrap();
        assert_eq!((he.record_count, he.last_offset()), (0, 103));
        assert_eq!(records(&empty, &he).unwrap().len(), 0);
        // A compressed batch is not read; a cut one is refused.
        let mut gz = b.clone();
        gz[22] |= 1;
        let hg = BatchHeader::parse(&gz).unwrap();
        assert!(records(&gz, &hg).is_none());
        let mut bad = b.clone();
        bad[HEADER_LEN] = 0x7e;
        assert!(records(&bad, &h).is_none());
    }
}
