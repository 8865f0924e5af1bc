//! Decoding requests and encoding responses, with the version policy applied.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::types::set_decode_budget;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::frame::{header_prefix, FrameError, HeaderPrefix, SIZE_PREFIX};
use crate::versions;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api:?} v{version} response: {reason}")]
pub struct EncodeError {
    pub api: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// A decoded request: its header and typed body.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

impl Request {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Decodes one frame (without its size prefix). Byte fields of the body (record
/// batches) stay zero-copy slices of `frame`.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    let HeaderPrefix {
        api_key,
        api_version,
        correlation_id,
    } = header_prefix(&frame)?;
    let api = ApiKey::try_from(api_key).map_err(|_| DecodeError::UnknownApiKey(api_key))?;
    if !versions::is_supported(api, api_version) {
        return Err(DecodeError::UnsupportedVersion {
            api,
            version: api_version,
            correlation_id,
        });
    }
    let malformed = |e: anyhow_like::E| DecodeError::Malformed {
        api,
        version: api_version,
        correlation_id,
        reason: e.0,
    };
    // Decoded arrays may take at most a multiple of the frame's bytes (see
    // `decode_budget`); the budget is this thread's, reset after the decode.
    let previous = set_decode_budget(decode_budget(api, frame.len()));
    let decoded = RequestHeader::decode(&mut frame, api.request_header_version(api_version))
        .and_then(|header| {
            RequestKind::decode(api, &mut frame, api_version).map(|body| (header, body))
        });
    set_decode_budget(previous);
    let (header, body) = decoded.map_err(|e| malformed(e.into()))?;
    Ok(Request {
        api,
        version: api_version,
        header,
        body,
    })
}

/// Bytes of array elements a request of `frame_len` bytes may decode into. A
/// hostile frame of one-byte elements would otherwise become structs a hundred
/// times its size. Honest requests stay well below these multiples: Produce
/// carries its records as shared bytes (every partition's batch is at least 61
/// bytes on the wire against about 70 decoded), while a Metadata or OffsetFetch
/// request naming thousands of short topics reaches about 15 times its size.
pub fn decode_budget(api: ApiKey, frame_len: usize) -> usize {
    const FLOOR: usize = 1 << 20;
    let factor = if api == ApiKey::Produce { 4 } else { 32 };
    frame_len.saturating_mul(factor).saturating_add(FLOOR)
}

// kafka-protocol reports errors as `anyhow::Error`; keep only their text so this
// crate's public types do not depend on anyhow.
mod anyhow_like {
    pub struct E(pub String);
    impl<T: std::fmt::Display> From<T> for E {
        fn from(e: T) -> Self {
            E(format!("{e:#}"))
        }
    }
}

/// Encodes a response with its size prefix and header, ready to write.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let err = |reason: String| EncodeError {
        api,
        version,
        reason,
    };
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| err(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| err(e.to_string()))?;
    let len = (buf.len() - SIZE_PREFIX) as i32;
    // `put_i32(0)` above reserved the size prefix; write the frame length into it.
    let prefix = buf
        .first_chunk_mut::<SIZE_PREFIX>()
        .ok_or_else(|| err("no size prefix".into()))?;
    *prefix = len.to_be_bytes();
    Ok(buf.freeze())
}

/// The answer to an ApiVersions request of a version we do not support: Kafka
/// replies in v0 format with UNSUPPORTED_VERSION and its own ranges (`ranges`:
/// the connection's ApiVersions answer, which depends on its listener), so that
/// the client can retry with a version both sides know.
pub fn api_versions_fallback(correlation_id: i32, mut r: ApiVersionsResponse) -> Bytes {
    r.error_code = kafka_protocol::ResponseError::UnsupportedVersion.code();
    // v0 of ApiVersions always encodes; the table is static.
    match encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(r),
    ) {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader};

    fn frame_of(api: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = 77;
        h.client_id = Some(kafka_protocol::protocol::StrBytes::from_static_str("t"));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_a_metadata_request_at_every_supported_version() {
        for v in 0..=12 {
            let f = frame_of(
                ApiKey::Metadata,
                v,
                &RequestKind::Metadata(MetadataRequest::default()),
            );
            let r = decode_request(f).unwrap();
            assert_eq!(
                (r.api, r.version, r.correlation_id()),
                (ApiKey::Metadata, v, 77)
            );
        }
    }

    #[test]
    fn refuses_unknown_keys_unsupported_versions_and_garbage() {
        let f = Bytes::from_static(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            decode_request(f),
            Err(DecodeError::UnknownApiKey(999))
        ));
        let f = frame_of(
            ApiKey::Metadata,
            12,
            &RequestKind::Metadata(MetadataRequest::default()),
        );
        let mut v = f.to_vec();
        v[3] = 13;
        assert!(matches!(
            decode_request(Bytes::from(v)),
            Err(DecodeError::UnsupportedVersion {
                correlation_id: 77,
                ..
            })
        ));
        let mut v = f.to_vec();
        v.truncate(12);
        assert!(matches!(
            decode_request(Bytes::from(v)),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn a_forged_array_count_is_an_error_not_an_abort() {
        // Produce v3: header v1 (key, version, correlation, client id null),
        // transactional id null, acks, timeout, then a topic array claiming 2^31-1 entries.
        let mut v = vec![
            0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1,
        ];
        v.extend_from_slice(&[0, 0, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_request(Bytes::from(v)),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn decoded_size_is_bounded_by_the_frame() {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::protocol::StrBytes;
        // Honest: 10,000 short topic names, about 15 decoded bytes per wire byte.
        let mut req = MetadataRequest::default();
        req.topics = Some(
            (0..10_000)
                .map(|i| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(format!("t{i}"))));
                    t
                })
                .collect(),
        );
        let f = frame_of(ApiKey::Metadata, 12, &RequestKind::Metadata(req));
        assert!(decode_request(f.clone()).is_ok());
        assert!(decode_budget(ApiKey::Metadata, f.len()) >= 32 * f.len());
        // The same body with a budget of 8 bytes a topic: refused, and the
        // thread's budget is restored afterwards.
        let before = set_decode_budget(10_000 * 8);
        let topics = RequestKind::decode(ApiKey::Metadata, &mut f.slice(12..), 12);
        set_decode_budget(before);
        assert!(topics.is_err());
        assert!(decode_request(f).is_ok());
        assert_eq!(set_decode_budget(usize::MAX), usize::MAX);
    }

    #[test]
    fn fallback_is_a_v0_api_versions_response() {
        let b = api_versions_fallback(5, versions::api_versions_response(0));
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        assert_eq!(len, b.len() - 4);
        assert_eq!(&b[4..8], &5i32.to_be_bytes());
        assert_eq!(&b[8..10], &35i16.to_be_bytes());
    }
}
