//! Arbitrary bytes as a produce request's records: the batch iterator, CRC check
//! and producer-batch checks must never panic.
#![no_main]
use kafscale_codec::batch::{verify_crc, Batches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Batches::new(data) {
        match item {
            Ok((h, range)) => {
                assert!(range.end <= data.len());
                let _ = verify_crc(&data[range], &h);
                let _ = h.check_producer_batch();
                let _ = (h.last_offset(), h.compression(), h.is_control());
            }
            Err(_) => break,
        }
    }
});
