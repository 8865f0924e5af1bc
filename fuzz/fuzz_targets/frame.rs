//! Arbitrary bytes as a stream of request frames: splitting and decoding must
//! never panic or abort, whatever the sizes and counts claim.
#![no_main]
use bytes::BytesMut;
use kafscale_codec::frame::split_frame;
use kafscale_codec::request::decode_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, 1 << 20) {
        let _ = decode_request(frame);
    }
    // The same bytes as one frame body, so header and body decoders see them.
    let _ = decode_request(bytes::Bytes::copy_from_slice(data));
});
