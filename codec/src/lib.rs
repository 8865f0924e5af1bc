//! Kafka wire protocol for Kafscale: framing, request decoding, response encoding,
//! the supported-version table and a zero-copy view of v2 record batches.
//!
//! Message structs come from the `kafka-protocol` crate (generated from Apache
//! Kafka's JSON specs); this crate only adds what the generator does not give:
//! safe framing, the version policy and the record-batch view. Nothing here does I/O.
//!
//! Everything here reads bytes a client or the object store sent, so nothing may
//! panic on them: no `unwrap`, `expect`, indexing or slicing outside tests
//! (`get`, `first_chunk` and typed errors instead).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod batch;
pub mod compression;
pub mod fetch_chunks;
pub mod frame;
pub mod fuzzing;
pub mod legacy;
pub mod records;
pub mod request;
pub mod versions;

pub use kafka_protocol;
pub use kafka_protocol::messages::ApiKey;
/// Kafka error codes, with their names and retriability, as generated upstream.
pub use kafka_protocol::ResponseError as KafkaError;

/// The error code field value for success.
pub const NONE: i16 = 0;

/// Shorthand for the numeric code of a Kafka error.
#[inline]
pub const fn code(e: KafkaError) -> i16 {
    e.code()
}
