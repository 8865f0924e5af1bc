//! The `.index` object: a sparse offset → position map of a segment.

use bytes::{BufMut, Bytes, BytesMut};

use super::segment::{BatchPos, FormatError};

pub const INDEX_HEADER_LEN: usize = 16;
pub const INDEX_ENTRY_LEN: usize = 12;
pub const INDEX_MAGIC: [u8; 4] = *b"IDX\0";
pub const INDEX_VERSION: u16 = 1;
pub const DEFAULT_INDEX_INTERVAL: i32 = 1000;

/// One entry at the first batch, then one at the next batch boundary after
/// every `interval` messages.
pub fn encode_index(batches: &[BatchPos], interval: i32) -> Bytes {
    let interval = interval.max(1);
    let mut entries: Vec<(i64, i32)> = Vec::new();
    let mut since = 0i64;
    for (i, b) in batches.iter().enumerate() {
        if i == 0 || since >= interval as i64 {
            entries.push((b.base_offset, b.pos as i32));
            since = 0;
        }
        since += b.last_offset - b.base_offset + 1;
    }
    let mut out = BytesMut::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN);
    out.put_slice(&INDEX_MAGIC);
    out.put_u16(INDEX_VERSION);
    out.put_i32(entries.len() as i32);
    out.put_i32(interval);
    out.put_u16(0);
    for (o, p) in entries {
        out.put_i64(o);
        out.put_i32(p);
    }
    out.freeze()
}

pub fn parse_index(b: &[u8]) -> Result<Vec<(i64, i32)>, FormatError> {
    let Some(&[m0, m1, m2, m3, v0, v1, c0, c1, c2, c3, ..]) = b.first_chunk::<INDEX_HEADER_LEN>()
    else {
        return Err(FormatError::Truncated {
            have: b.len(),
            need: INDEX_HEADER_LEN,
        });
    };
    if [m0, m1, m2, m3] != INDEX_MAGIC {
        return Err(FormatError::BadMagic(u32::from_be_bytes([m0, m1, m2, m3])));
    }
    let version = u16::from_be_bytes([v0, v1]);
    if version != INDEX_VERSION {
        return Err(FormatError::BadVersion(version));
    }
    let count = i32::from_be_bytes([c0, c1, c2, c3]);
    if count < 0 {
        return Err(FormatError::Inconsistent(format!(
            "negative entry count {count}"
        )));
    }
    let need = INDEX_HEADER_LEN + count as usize * INDEX_ENTRY_LEN;
    let truncated = || FormatError::Truncated {
        have: b.len(),
        need,
    };
    b.get(INDEX_HEADER_LEN..need)
        .ok_or_else(truncated)?
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|e| {
            // `chunks_exact`: every entry has its 12 bytes.
            let (offset, pos) = e.split_first_chunk::<8>()?;
            Some((
                i64::from_be_bytes(*offset),
                i32::from_be_bytes(*pos.first_chunk::<4>()?),
            ))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(base: i64, n: i64, pos: u32) -> BatchPos {
        BatchPos {
            base_offset: base,
            last_offset: base + n - 1,
            pos,
            len: 10,
            max_timestamp: 0,
        }
    }

    #[test]
    fn entries_at_first_batch_and_after_each_interval() {
        let batches = [
            pos(0, 3, 32),
            pos(3, 3, 42),
            pos(6, 1, 52),
            pos(7, 5, 62),
            pos(12, 1, 72),
        ];
        let idx = encode_index(&batches, 5);
        assert_eq!(idx.len(), INDEX_HEADER_LEN + 3 * INDEX_ENTRY_LEN);
        assert_eq!(parse_index(&idx).unwrap(), vec![(0, 32), (6, 52), (12, 72)]);
        assert!(parse_index(&idx[..20]).is_err());
        assert!(parse_index(b"nope-nope-nope-nope").is_err());
    }
}
