//! On-object formats, kept apart from the policy that uses them.
//!
//! The objects come from the store and may be corrupt or truncated, so nothing
//! here may panic on their bytes: no `unwrap`, `expect`, indexing or slicing
//! outside tests (`get`, `first_chunk` and `FormatError` instead).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod crc;
pub mod index;
pub mod segment;
