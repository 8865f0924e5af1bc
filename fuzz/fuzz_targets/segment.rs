//! Arbitrary bytes as a `.kfs` segment object (`kafscale_segstore::fuzzing::segment`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kafscale_segstore::fuzzing::segment(data));
