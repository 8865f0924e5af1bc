//! Arbitrary bytes as a produce request's records: the batch iterator, CRC check
//! and producer-batch checks must never panic (`kafscale_codec::fuzzing::record_batch`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kafscale_codec::fuzzing::record_batch(data));
