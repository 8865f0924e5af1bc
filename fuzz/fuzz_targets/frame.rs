//! Arbitrary bytes as a stream of request frames: splitting and decoding must
//! never panic or abort, whatever the sizes and counts claim. The body is
//! `kafscale_codec::fuzzing::frame`, which `make test` also runs on stable
//! (segstore/tests/fuzz.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kafscale_codec::fuzzing::frame(data));
