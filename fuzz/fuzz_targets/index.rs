//! Arbitrary bytes as a `.index` object (`kafscale_segstore::fuzzing::index`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kafscale_segstore::fuzzing::index(data));
