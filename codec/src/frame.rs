//! Size-prefixed Kafka frames: a big-endian i32 length, then the request.

use bytes::{Buf, Bytes, BytesMut};

/// Length of the size prefix in front of every request and response.
pub const SIZE_PREFIX: usize = 4;
/// A request header v0 holds at least api key, api version and correlation id.
pub const MIN_HEADER: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
}

/// Length of the next frame's payload if its prefix is complete.
pub fn peek_frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<SIZE_PREFIX>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*prefix);
    if len < 0 {
        return Err(FrameError::Negative(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len < MIN_HEADER {
        return Err(FrameError::TooShort(len));
    }
    Ok(Some(len))
}

/// Splits one complete frame (without its prefix) off the front of `buf`,
/// zero-copy. `Ok(None)` means more bytes are needed.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    match peek_frame_len(buf, max)? {
        Some(len) if buf.len() >= SIZE_PREFIX + len => {
            buf.advance(SIZE_PREFIX);
            Ok(Some(buf.split_to(len).freeze()))
        }
        _ => Ok(None),
    }
}

/// The fixed leading fields of every request header version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the fields every header version starts with, so that even a request we
/// cannot decode can be answered with its correlation id.
pub fn header_prefix(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
    let Some(&[k0, k1, v0, v1, c0, c1, c2, c3]) = frame.first_chunk::<MIN_HEADER>() else {
        return Err(FrameError::TooShort(frame.len()));
    };
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([k0, k1]),
        api_version: i16::from_be_bytes([v0, v1]),
        correlation_id: i32::from_be_bytes([c0, c1, c2, c3]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn splits_complete_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&framed(b"0123456789"));
        buf.extend_from_slice(&framed(b"abcdefgh")[..6]);
        assert_eq!(
            split_frame(&mut buf, 100).unwrap().unwrap(),
            &b"0123456789"[..]
        );
        assert_eq!(split_frame(&mut buf, 100).unwrap(), None);
        buf.extend_from_slice(&framed(b"abcdefgh")[6..]);
        assert_eq!(
            split_frame(&mut buf, 100).unwrap().unwrap(),
            &b"abcdefgh"[..]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversized_negative_and_tiny_frames() {
        let mut buf = BytesMut::from(&0x7fff_fff0i32.to_be_bytes()[..]);
        assert_eq!(
            split_frame(&mut buf, 1 << 20),
            Err(FrameError::TooLarge {
                len: 0x7fff_fff0,
                max: 1 << 20
            })
        );
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(split_frame(&mut buf, 100), Err(FrameError::Negative(-5)));
        let mut buf = BytesMut::from(&framed(b"abc")[..]);
        assert_eq!(split_frame(&mut buf, 100), Err(FrameError::TooShort(3)));
    }

    #[test]
    fn reads_header_prefix() {
        let p = header_prefix(&[0, 18, 0, 3, 0, 0, 1, 2, 9]).unwrap();
        assert_eq!(
            p,
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 258
            }
        );
        assert!(header_prefix(&[0, 1]).is_err());
    }
}
