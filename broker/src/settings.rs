//! What the broker's layers read from its configuration, as plain structs. The
//! command line (`config.rs`, clap and `KAFSCALE_*` variables) builds them once
//! at start (`Config::settings`); nothing below the edge sees clap types, and
//! tests build settings directly.

use std::time::Duration;

use crate::groups::coordinator::GroupConfig;
use crate::partition::LogSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub broker_id: i32,
    /// Create unknown topics on Metadata and Produce.
    pub auto_create_topics: bool,
    pub auto_create_partitions: i32,
    /// The largest request frame a connection accepts.
    pub max_request_bytes: usize,
    /// The largest request frame other than Produce.
    pub max_non_produce_request_bytes: usize,
    /// Connections and request bytes, broker-wide.
    pub admission: crate::admission::AdmissionLimits,
    /// A connection with nothing read, answered or in progress this long is closed.
    pub connections_max_idle: Duration,
    /// A request whose first bytes arrived must be complete within this.
    pub request_read_timeout: Duration,
    /// The largest record batch of a topic without its own max.message.bytes.
    pub max_message_bytes: usize,
    /// What requests may persist.
    pub limits: ResourceLimits,
    /// Log every Kafka request and its outcome.
    pub trace_kafka: bool,
    pub offset_metadata_max_bytes: usize,
    /// Seconds over which the throughput rates are averaged.
    pub throughput_window_sec: u64,
    pub log: LogSettings,
    pub groups: GroupConfig,
    /// Where segments are stored, as DescribeConfigs reports it.
    pub store: StoreSettings,
    /// Listeners, TLS, SASL (docs/security.md).
    pub security: std::sync::Arc<crate::security::SecuritySettings>,
}

/// Bounds on what a request can make the broker store (topics, partitions):
/// each is persisted and loaded by every broker at start. (Config values need
/// no bound of their own: every topic config accepted is a number, one of a
/// fixed set of words, or text of at most `topic_config::MAX_TEXT_BYTES`.)
#[derive(Debug, Clone, Copy)]
pub struct ResourceLimits {
    pub max_topics: usize,
    pub max_partitions_per_topic: i32,
    pub max_partitions: usize,
}

#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    pub bucket: Option<String>,
    pub region: String,
    pub endpoint: Option<String>,
    /// Where this broker's partitions live, as DescribeLogDirs names the one
    /// "log dir" (`s3://bucket/namespace`, `file://...`, `memory://namespace`).
    pub log_dir: String,
}
