//! Observability data: counters and levels every layer records into, and which
//! Kafka APIs count as admin requests. A leaf: it imports no other broker module,
//! and only the HTTP edge turns it into text.

pub mod admin;
pub mod metrics;
