//! The bodies of the fuzz targets, as library functions: `fuzz/` (cargo-fuzz,
//! nightly) calls them, and the stable mutation harness in
//! `segstore/tests/fuzz.rs`, which runs in every `make test`, calls the same
//! ones. Each must return, never panic or abort, whatever the bytes.

use bytes::{Bytes, BytesMut};

use crate::batch::{verify_crc, Batches};
use crate::frame::split_frame;
use crate::request::decode_request;

/// Arbitrary bytes as a stream of request frames and as one frame body.
pub fn frame(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, 1 << 20) {
        let _ = decode_request(frame);
    }
    let _ = decode_request(Bytes::copy_from_slice(data));
}

/// Arbitrary bytes as a produce request's records.
pub fn record_batch(data: &[u8]) {
    for item in Batches::new(data) {
        match item {
            Ok((h, range)) => {
                assert!(range.end <= data.len());
                if let Some(b) = data.get(range) {
                    let _ = verify_crc(b, &h);
                }
                let _ = h.check_producer_batch();
                let _ = (h.last_offset(), h.compression(), h.is_control());
            }
            Err(_) => break,
        }
    }
}
