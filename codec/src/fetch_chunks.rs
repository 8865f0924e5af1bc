//! Fetch responses as a list of chunks: the response's own fields, encoded by
//! the generated encoder, with each partition's record data spliced in as the
//! `Bytes` the log handed out (a slice of a cached segment), never copied. The
//! connection writes the chunks with one vectored send.
//!
//! The generated encoder writes a partition's records inline, so every byte of
//! them would be copied into the response buffer (and again as it grows). Here
//! each partition's records are swapped for a short marker, the rest is encoded
//! as usual, and the marker's bytes (with their length prefix) are cut out and
//! replaced by the records' length and the records themselves.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind};

use crate::frame::SIZE_PREFIX;
use crate::request::{encode_response, EncodeError};

/// Stands in for a partition's records while the rest is encoded. Its bytes
/// cannot occur elsewhere in a Fetch response: strings there are UTF-8 (0xFF
/// and 0xFE never occur in UTF-8), every other records field is a marker too,
/// and the numbers (offsets, epochs, ids the broker sets) read as these bytes
/// would have to be negative and followed by this exact text.
const MARKER: [u8; 16] = *b"\xff\xfeKAFSCALE-RECS\xfe";

/// The first Fetch version whose records field is compact (varint length + 1).
const FIRST_FLEXIBLE: i16 = 12;

/// Below this many bytes of records a response is encoded whole: copying them
/// costs less than a chunk list and the extra `iovec`s.
pub const CHUNK_THRESHOLD: usize = 16 << 10;

/// Encodes a Fetch response frame (size prefix included) as chunks whose
/// concatenation is exactly what `encode_response` would write: owned field
/// bytes and, between them, every partition's records as given.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    mut body: FetchResponse,
) -> Result<Vec<Bytes>, EncodeError> {
    let err = |reason: &str| EncodeError {
        api: ApiKey::Fetch,
        version,
        reason: reason.to_string(),
    };
    let total: usize = body
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref())
        .map(Bytes::len)
        .sum();
    if total < CHUNK_THRESHOLD {
        let whole = encode_response(
            ApiKey::Fetch,
            version,
            correlation_id,
            &ResponseKind::Fetch(body),
        )?;
        return Ok(vec![whole]);
    }
    let mut records = Vec::new();
    for t in &mut body.responses {
        for p in &mut t.partitions {
            if let Some(r) = p.records.as_mut().filter(|r| !r.is_empty()) {
                records.push(std::mem::replace(r, Bytes::from_static(&MARKER)));
            }
        }
    }
    let fields = encode_response(
        ApiKey::Fetch,
        version,
        correlation_id,
        &ResponseKind::Fetch(body),
    )?;
    let flexible = version >= FIRST_FLEXIBLE;
    // The marker's own length prefix, as the encoder wrote it.
    let marker_prefix: &[u8] = if flexible {
        &[MARKER.len() as u8 + 1]
    } else {
        &[0, 0, 0, MARKER.len() as u8]
    };
    let mut out = BytesMut::with_capacity(fields.len() + records.len() * 4);
    // Where each partition's records go: the position in `out` after its length.
    let mut cuts = Vec::with_capacity(records.len());
    let mut pos = 0;
    for r in &records {
        let rest = fields.get(pos..).ok_or_else(|| err("record marker lost"))?;
        let at = pos + find(rest, &MARKER).ok_or_else(|| err("record marker not found"))?;
        let start = at
            .checked_sub(marker_prefix.len())
            .filter(|s| *s >= pos && fields.get(*s..at) == Some(marker_prefix))
            .ok_or_else(|| err("record marker without its length"))?;
        out.extend_from_slice(fields.get(pos..start).unwrap_or_default());
        if flexible {
            put_uvarint(&mut out, r.len() as u64 + 1);
        } else {
            out.put_i32(i32::try_from(r.len()).map_err(|_| err("records too large"))?);
        }
        cuts.push(out.len());
        pos = at + MARKER.len();
    }
    out.extend_from_slice(fields.get(pos..).unwrap_or_default());
    let len =
        i32::try_from(out.len() + total - SIZE_PREFIX).map_err(|_| err("response too large"))?;
    let prefix = out
        .first_chunk_mut::<SIZE_PREFIX>()
        .ok_or_else(|| err("no size prefix"))?;
    *prefix = len.to_be_bytes();
    let out = out.freeze();
    let mut chunks = Vec::with_capacity(records.len() * 2 + 1);
    let mut prev = 0;
    for (cut, r) in cuts.into_iter().zip(records) {
        chunks.push(out.slice(prev..cut));
        chunks.push(r);
        prev = cut;
    }
    chunks.push(out.slice(prev..));
    Ok(chunks)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn response(records: &[Option<Bytes>]) -> FetchResponse {
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        for (i, r) in records.iter().enumerate() {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.high_watermark = 7;
            p.records = r.clone();
            t.partitions.push(p);
        }
        let mut resp = FetchResponse::default();
        resp.responses.push(t);
        resp
    }

    #[test]
    fn chunks_are_the_response_the_generated_encoder_writes() {
        // 300 bytes needs a two-byte varint; 20,000 bytes takes it past the threshold.
        let big = Bytes::from(vec![7u8; 20_000]);
        let records = [
            Some(Bytes::from_static(b"abc")),
            None,
            Some(Bytes::new()),
            Some(Bytes::from(vec![9u8; 300])),
            Some(big.clone()),
        ];
        for version in [0, 3, 4, 11, 12, 13, 16] {
            let whole = encode_response(
                ApiKey::Fetch,
                version,
                9,
                &ResponseKind::Fetch(response(&records)),
            )
            .unwrap();
            let chunks = encode_fetch_response(version, 9, response(&records)).unwrap();
            assert!(chunks.len() > 1, "v{version}");
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, whole.to_vec(), "v{version}");
            // The record data is the caller's, not a copy.
            assert!(
                chunks.iter().any(|c| c.as_ptr() == big.as_ptr()),
                "v{version}"
            );
            let mut b = Bytes::from(joined).slice(SIZE_PREFIX..);
            let h = ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(version))
                .unwrap();
            assert_eq!(h.correlation_id, 9);
            let r = FetchResponse::decode(&mut b, version).unwrap();
            assert_eq!(r.responses[0].partitions[4].records.as_ref(), Some(&big));
            assert_eq!(
                r.responses[0].partitions[0].records.as_deref(),
                Some(&b"abc"[..])
            );
        }
    }

    #[test]
    fn a_small_response_is_one_chunk() {
        let chunks =
            encode_fetch_response(12, 1, response(&[None, Some(Bytes::from_static(b"x"))]))
                .unwrap();
        assert_eq!(chunks.len(), 1);
        let whole = encode_response(
            ApiKey::Fetch,
            12,
            1,
            &ResponseKind::Fetch(response(&[None, Some(Bytes::from_static(b"x"))])),
        )
        .unwrap();
        assert_eq!(chunks[0], whole);
    }

    #[test]
    fn records_that_contain_the_marker_are_spliced_as_data() {
        // A client's record bytes may hold anything, the marker included: they
        // are never searched.
        let mut evil = vec![0u8; 20_000];
        evil[100..116].copy_from_slice(&MARKER);
        let records = [Some(Bytes::from(evil.clone())), Some(Bytes::from(evil))];
        let whole = encode_response(
            ApiKey::Fetch,
            12,
            3,
            &ResponseKind::Fetch(response(&records)),
        )
        .unwrap();
        let chunks = encode_fetch_response(12, 3, response(&records)).unwrap();
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, whole.to_vec());
    }
}
