//! The record compression codecs, for the one place the broker has to look
//! inside compressed data: converting message sets of magic 0/1 to and from v2
//! batches (`legacy.rs`). Everywhere else compressed batches pass through as
//! the producer wrote them.
//!
//! Decompression is bounded: a small compressed message can expand to any size,
//! so every decoder stops at the caller's limit instead of allocating for it.

use std::io::{Read, Write};

/// Codec ids, as in the attributes of messages and batches.
pub const NONE: u8 = 0;
pub const GZIP: u8 = 1;
pub const SNAPPY: u8 = 2;
pub const LZ4: u8 = 3;
pub const ZSTD: u8 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressionError {
    /// zstd (Kafka answers Fetch below v10 of zstd data the same way) or an
    /// id no codec has.
    #[error("compression codec {0} is not supported here")]
    Unsupported(u8),
    #[error("compressed data is corrupt: {0}")]
    Corrupt(String),
    #[error("compressed data expands beyond {0} bytes")]
    TooLarge(usize),
}

/// snappy-java's stream header (Kafka's snappy framing): magic, version 1,
/// compatible version 1; then blocks of a big-endian u32 length and raw snappy.
const SNAPPY_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// The header's magic; the version fields after it vary between writers.
const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// snappy-java's default block size, which Kafka's producers use.
const SNAPPY_BLOCK: usize = 32 << 10;

fn corrupt(e: impl std::fmt::Display) -> CompressionError {
    CompressionError::Corrupt(e.to_string())
}

/// Reads `r` to its end, failing once it yields more than `limit` bytes.
fn read_bounded(r: impl Read, limit: usize) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > limit {
        return Err(CompressionError::TooLarge(limit));
    }
    Ok(out)
}

/// Decompresses `data` written with `codec`, to at most `limit` bytes.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    match codec {
        NONE => {
            if data.len() > limit {
                return Err(CompressionError::TooLarge(limit));
            }
            Ok(data.to_vec())
        }
        // Java's GZIPInputStream reads concatenated members, so clients may send them.
        GZIP => read_bounded(flate2::read::MultiGzDecoder::new(data), limit),
        SNAPPY => unsnappy(data, limit),
        LZ4 => read_bounded(lz4::Decoder::new(data).map_err(corrupt)?, limit),
        other => Err(CompressionError::Unsupported(other)),
    }
}

/// snappy-java's framing, or a raw snappy block without it (which snappy-java
/// reads too, and some non-Java clients write).
fn unsnappy(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    let raw = |block: &[u8], out: &mut Vec<u8>| {
        let n = snap::raw::decompress_len(block).map_err(corrupt)?;
        if out.len().saturating_add(n) > limit {
            return Err(CompressionError::TooLarge(limit));
        }
        let at = out.len();
        out.resize(at + n, 0);
        let tail = out.get_mut(at..).unwrap_or_default();
        snap::raw::Decoder::new()
            .decompress(block, tail)
            .map_err(corrupt)?;
        Ok(())
    };
    let Some(mut rest) = data.strip_prefix(SNAPPY_MAGIC).and_then(|r| r.get(8..)) else {
        raw(data, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("snappy block length cut"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).ok_or_else(|| corrupt("snappy block cut"))?;
        raw(block, &mut out)?;
        rest = tail.get(len..).unwrap_or_default();
    }
    Ok(out)
}

/// Compresses `data` with `codec`, in the framing Kafka's clients read.
pub fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).map_err(corrupt)?;
            e.finish().map_err(corrupt)
        }
        SNAPPY => {
            let mut out = SNAPPY_HEADER.to_vec();
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(SNAPPY_BLOCK) {
                let block = enc.compress_vec(chunk).map_err(corrupt)?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        LZ4 => {
            // Independent 64 KiB blocks: what Kafka's own LZ4 stream reads.
            let mut e = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .block_size(lz4::BlockSize::Max64KB)
                .build(Vec::new())
                .map_err(corrupt)?;
            e.write_all(data).map_err(corrupt)?;
            let (out, r) = e.finish();
            r.map_err(corrupt)?;
            Ok(out)
        }
        other => Err(CompressionError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_stops_at_the_limit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4] {
            let c = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &c, data.len()).unwrap(), data, "{codec}");
            assert_eq!(
                decompress(codec, &c, data.len() - 1),
                Err(CompressionError::TooLarge(data.len() - 1)),
                "{codec}"
            );
        }
        assert_eq!(
            decompress(ZSTD, b"x", 10),
            Err(CompressionError::Unsupported(ZSTD))
        );
        assert!(matches!(
            decompress(GZIP, b"not gzip", 10),
            Err(CompressionError::Corrupt(_))
        ));
    }

    #[test]
    fn snappy_reads_raw_blocks_and_refuses_cut_frames() {
        let raw = snap::raw::Encoder::new().compress_vec(b"hello").unwrap();
        assert_eq!(decompress(SNAPPY, &raw, 100).unwrap(), b"hello");
        let framed = compress(SNAPPY, b"hello").unwrap();
        assert!(decompress(SNAPPY, &framed[..framed.len() - 1], 100).is_err());
        // A 7-byte snappy block may claim 4 GiB: refused before allocating.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        assert!(decompress(SNAPPY, &bomb, 1 << 20).is_err());
    }
}
