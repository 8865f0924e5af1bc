//! What the broker's layers read from its configuration, as plain structs. The
//! command line (`config.rs`, clap and `KAFSCALE_*` variables) builds them once
//! at start (`Config::settings`); nothing below the edge sees clap types, and
//! tests build settings directly.

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
    /// Log every Kafka request and its outcome.
    pub trace_kafka: bool,
    pub offset_metadata_max_bytes: usize,
    /// Seconds over which the throughput rates are averaged.
    pub throughput_window_sec: u64,
    pub log: LogSettings,
    pub groups: GroupConfig,
    /// Where segments are stored, as DescribeConfigs reports it.
    pub store: StoreSettings,
}

#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    pub bucket: Option<String>,
    pub region: String,
    pub endpoint: Option<String>,
}
