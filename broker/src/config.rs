//! Every broker setting: a clap flag with a `KAFSCALE_*` environment variable.
//! Names follow the Go Kafscale so that existing deployments carry over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kafscale_segstore::HealthConfig;

#[derive(Debug, Parser)]
#[command(
    name = "kafscale-broker",
    version,
    about = "Kafscale: a Kafka-protocol broker with S3 segment storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default).
    Run,
    /// Call a running broker's BrokerControl API (status, flush, drain, resume).
    Ctl(crate::control::cli::CtlArgs),
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the Kafka listener binds to.
    #[arg(long, env = "KAFSCALE_BROKER_ADDR", default_value = "127.0.0.1:9092")]
    pub broker_addr: SocketAddr,
    /// Host advertised to clients in Metadata (default: the listen host).
    #[arg(long, env = "KAFSCALE_BROKER_HOST")]
    pub broker_host: Option<String>,
    /// Port advertised to clients in Metadata (default: the listen port).
    #[arg(long, env = "KAFSCALE_BROKER_PORT")]
    pub broker_port: Option<u16>,
    /// Node id of this broker.
    #[arg(long, env = "KAFSCALE_BROKER_ID", default_value_t = 0)]
    pub broker_id: i32,
    /// Directory for embedded metadata and, without S3, the segment objects.
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Number of shards (pinned cores). Default: the CPUs this process may use.
    #[arg(long, env = "KAFSCALE_SHARDS")]
    pub shards: Option<usize>,
    /// Seal and upload a partition's segment when its buffer reaches this size.
    #[arg(long, env = "KAFSCALE_SEGMENT_BYTES", default_value_t = 8 << 20)]
    pub segment_bytes: usize,
    /// Upper bound on waiting: a partition's unflushed data is sealed and
    /// uploaded by the flush tick of this interval at the latest. Data an
    /// acks=all producer waits for goes sooner (group commit).
    #[arg(long, env = "KAFSCALE_FLUSH_INTERVAL_MS", default_value_t = 100)]
    pub flush_interval_ms: u64,
    /// Lower bound of group commit: a partition seals a segment for waiting
    /// acks=all producers no sooner than this after its previous one, which
    /// bounds its PUT rate. Default: 0 on the local directory and in memory,
    /// 50 on S3 (docs/configuration.md, "Group commit"); at most
    /// KAFSCALE_FLUSH_INTERVAL_MS.
    #[arg(long, env = "KAFSCALE_FLUSH_MIN_INTERVAL_MS")]
    pub flush_min_interval_ms: Option<u64>,
    /// How the local directory store writes segments: `thread` (the I/O
    /// runtime's threads, through object_store) or `uring` (each shard's own
    /// io_uring; docs/configuration.md, "Local directory I/O"). Both fsync
    /// every segment before acks=all is answered. Ignored on S3 and in memory.
    #[arg(long, env = "KAFSCALE_LOCAL_IO", value_enum, default_value_t = LocalIo::Thread)]
    pub local_io: LocalIo,
    /// How an acks=all commit on the local directory store is made durable:
    /// `files` (each partition's segment written and fsynced as its own files)
    /// or `log` (one append and fdatasync of the shard's commit log per group
    /// commit; segments are written out to files later, several at once;
    /// docs/configuration.md, "Local commit log"). `log` needs the embedded
    /// metadata and KAFSCALE_LOCAL_IO=thread; ignored on S3 and in memory.
    #[arg(long, env = "KAFSCALE_LOCAL_COMMIT", value_enum, default_value_t = LocalCommit::Files)]
    pub local_commit: LocalCommit,
    /// Bytes of segments read from the object store kept in memory (all shards together).
    #[arg(long, env = "KAFSCALE_CACHE_BYTES", default_value_t = 256 << 20)]
    pub cache_bytes: usize,
    /// Segments fetched ahead of a consumer reading from the object store.
    #[arg(long, env = "KAFSCALE_READAHEAD_SEGMENTS", default_value_t = 2)]
    pub readahead_segments: usize,
    /// How often each shard enforces topic retention (retention.ms, retention.bytes)
    /// on its partitions, deleting whole expired segments from the object store.
    #[arg(
        long,
        env = "KAFSCALE_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub retention_check_interval_ms: u64,
    /// How long each shard's log cleaner sleeps between passes over its
    /// partitions of compacted topics (Kafka's log.cleaner.backoff.ms).
    #[arg(
        long,
        env = "KAFSCALE_LOG_CLEANER_BACKOFF_MS",
        default_value_t = 15_000
    )]
    pub log_cleaner_backoff_ms: u64,
    /// Create unknown topics on Metadata and Produce requests.
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics (and of CreateTopics asking for the default).
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_PARTITIONS", default_value_t = 1)]
    pub auto_create_partitions: i32,
    /// Largest request frame accepted; larger frames close the connection.
    #[arg(long, env = "KAFSCALE_MAX_REQUEST_BYTES", default_value_t = 100 << 20)]
    pub max_request_bytes: usize,
    /// Largest request frame other than Produce; larger ones close the connection
    /// (they carry no records, and are decoded into structures several times
    /// their size).
    #[arg(
        long,
        env = "KAFSCALE_MAX_NON_PRODUCE_REQUEST_BYTES",
        default_value_t = 4 << 20
    )]
    pub max_non_produce_request_bytes: usize,
    /// Bytes of requests the broker holds at once, read and not yet answered, all
    /// connections together (Kafka's queued.max.request.bytes). Connections stop
    /// reading while it is spent; one request alone may exceed it.
    #[arg(
        long,
        env = "KAFSCALE_QUEUED_MAX_REQUEST_BYTES",
        default_value_t = 512 << 20
    )]
    pub queued_max_request_bytes: usize,
    /// Largest record batch a producer may send to a topic without its own
    /// max.message.bytes (Kafka's message.max.bytes); larger ones get MESSAGE_TOO_LARGE.
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1_048_588)]
    pub max_message_bytes: usize,
    /// Open client connections, all addresses together (Kafka's max.connections);
    /// further connections are closed at accept.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Open client connections from one address (Kafka's max.connections.per.ip).
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,
    /// Close a connection that read, answered and handled nothing for this long
    /// (Kafka's connections.max.idle.ms).
    #[arg(
        long,
        env = "KAFSCALE_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    pub connections_max_idle_ms: u64,
    /// A request whose first bytes arrived must be complete within this long, or
    /// the connection is closed (slow or stalled senders).
    #[arg(
        long,
        env = "KAFSCALE_REQUEST_READ_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_read_timeout_ms: u64,
    /// Topics the cluster may hold; CreateTopics beyond it gets POLICY_VIOLATION.
    #[arg(long, env = "KAFSCALE_MAX_TOPICS", default_value_t = 10_000)]
    pub max_topics: usize,
    /// Partitions one topic may have (CreateTopics, CreatePartitions: INVALID_PARTITIONS).
    #[arg(
        long,
        env = "KAFSCALE_MAX_PARTITIONS_PER_TOPIC",
        default_value_t = 10_000
    )]
    pub max_partitions_per_topic: i32,
    /// Partitions the cluster may hold in all topics together (POLICY_VIOLATION beyond).
    #[arg(long, env = "KAFSCALE_MAX_PARTITIONS", default_value_t = 100_000)]
    pub max_partitions: usize,
    /// Forget an idempotent producer's sequence state this long after its last
    /// batch (Kafka's producer.id.expiration.ms); it is then accepted at any
    /// sequence, as after a restart.
    #[arg(
        long,
        env = "KAFSCALE_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000
    )]
    pub producer_id_expiration_ms: u64,
    /// Unflushed bytes a shard may hold before producers get retriable errors.
    #[arg(long, env = "KAFSCALE_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    pub max_buffered_bytes: usize,
    /// Concurrent segment uploads per shard.
    #[arg(long, env = "KAFSCALE_UPLOAD_CONCURRENCY", default_value_t = 16)]
    pub upload_concurrency: usize,
    /// Worker threads of the I/O runtime (object store and metadata calls).
    #[arg(long, env = "KAFSCALE_IO_THREADS", default_value_t = 1)]
    pub io_threads: usize,
    /// Log level filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: text (human-readable) or json (one JSON object per line).
    #[arg(long, env = "KAFSCALE_LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log one line per Kafka request at info level (API, version, client id,
    /// correlation id, latency, error code).
    #[arg(long, env = "KAFSCALE_TRACE_KAFKA", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_flag)]
    pub trace_kafka: bool,
    /// How long a consumer group that was empty waits for more members before its first
    /// rebalance completes (Kafka's group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a group member may ask for (Kafka's group.min.session.timeout.ms).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6000
    )]
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a group member may ask for (Kafka's group.max.session.timeout.ms).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: i32,
    /// Consumer-protocol groups (KIP-848): a member that sends no heartbeat for
    /// this long is fenced and its partitions reassigned (Kafka's
    /// group.consumer.session.timeout.ms).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub group_consumer_session_timeout_ms: u64,
    /// Consumer-protocol groups: the heartbeat interval handed to members
    /// (Kafka's group.consumer.heartbeat.interval.ms).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 5_000
    )]
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Longest metadata string accepted with a committed offset (Kafka's offset.metadata.max.bytes).
    #[arg(
        long,
        env = "KAFSCALE_OFFSET_METADATA_MAX_BYTES",
        default_value_t = 4096
    )]
    pub offset_metadata_max_bytes: usize,
    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    #[arg(long, env = "KAFSCALE_METRICS_ADDR", default_value = "127.0.0.1:9093")]
    pub metrics_addr: SocketAddr,
    /// Address of the BrokerControl gRPC endpoint (status, flush, drain, resume;
    /// `kafscale-broker ctl`). Port 0 takes a free port.
    #[arg(long, env = "KAFSCALE_CONTROL_ADDR", default_value = "127.0.0.1:9094")]
    pub control_addr: SocketAddr,
    /// Window of the kafscale_produce_rps and kafscale_fetch_rps gauges, in seconds.
    #[arg(long, env = "KAFSCALE_THROUGHPUT_WINDOW_SEC", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub throughput_window_sec: u64,
    /// Keep segments in memory instead of a directory or S3 (tests and demos).
    #[arg(long, env = "KAFSCALE_USE_MEMORY_S3", default_value_t = false, value_parser = parse_flag)]
    pub use_memory_s3: bool,
    /// Object-store fault control file (testing): see docs/testing.md.
    #[arg(long, env = "KAFSCALE_FAULTS_FILE", hide = true)]
    pub faults_file: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub s3_health: S3HealthArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub security: crate::security_config::SecurityArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (e.g. http://etcd-0:2379,http://etcd-1:2379).
    /// When set, metadata, offsets and groups live in etcd instead of the data directory.
    #[arg(long, env = "KAFSCALE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// etcd user (with auth enabled).
    #[arg(long, env = "KAFSCALE_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    #[arg(long, env = "KAFSCALE_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// Deadline of every etcd call; requests that need etcd fail with a retriable
    /// error after it while etcd is unreachable.
    #[arg(long, env = "KAFSCALE_ETCD_TIMEOUT_MS", default_value_t = 5000)]
    pub etcd_timeout_ms: u64,
    /// TTL of this broker's registration lease under /kafscale/brokers/.
    #[arg(long, env = "KAFSCALE_ETCD_LEASE_TTL_SEC", default_value_t = 10)]
    pub etcd_lease_ttl_sec: i64,
}

/// Shown in place of a secret by `Debug`.
const REDACTED: &str = "<redacted>";

fn redact(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

// Written out so that a secret never reaches a log line or a panic message.
impl std::fmt::Debug for EtcdArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdArgs")
            .field("etcd_endpoints", &self.etcd_endpoints)
            .field("etcd_username", &self.etcd_username)
            .field("etcd_password", &redact(&self.etcd_password))
            .field("etcd_timeout_ms", &self.etcd_timeout_ms)
            .field("etcd_lease_ttl_sec", &self.etcd_lease_ttl_sec)
            .finish()
    }
}

impl std::fmt::Debug for S3Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Args")
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_path_style", &self.s3_path_style)
            .field("s3_access_key", &self.s3_access_key)
            .field("s3_secret_key", &redact(&self.s3_secret_key))
            .field("s3_session_token", &redact(&self.s3_session_token))
            .field("s3_kms_arn", &self.s3_kms_arn)
            .field("s3_namespace", &self.s3_namespace)
            .field("s3_read_bucket", &self.s3_read_bucket)
            .field("s3_read_region", &self.s3_read_region)
            .field("s3_read_endpoint", &self.s3_read_endpoint)
            .field("s3_unsigned_payload", &self.s3_unsigned_payload)
            .finish()
    }
}

impl EtcdArgs {
    /// The endpoints given, without blanks (an empty variable means "no etcd").
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd_endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

#[derive(Clone, Args)]
pub struct S3Args {
    /// S3 bucket; when set, segments go to S3 instead of the data directory.
    #[arg(long, env = "KAFSCALE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Custom endpoint (MinIO, s3s, ...).
    #[arg(long, env = "KAFSCALE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Path-style addressing (bucket in the path, not the host).
    #[arg(long, env = "KAFSCALE_S3_PATH_STYLE", default_value_t = false, value_parser = parse_flag)]
    pub s3_path_style: bool,
    #[arg(long, env = "KAFSCALE_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    /// SSE-KMS key ARN for segment objects.
    #[arg(long, env = "KAFSCALE_S3_KMS_ARN")]
    pub s3_kms_arn: Option<String>,
    /// Key prefix of this cluster's objects.
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub s3_namespace: String,
    /// Read replica bucket (cross-region replication), tried first for reads.
    #[arg(long, env = "KAFSCALE_S3_READ_BUCKET")]
    pub s3_read_bucket: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_READ_REGION")]
    pub s3_read_region: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_READ_ENDPOINT")]
    pub s3_read_endpoint: Option<String>,
    /// Send object bodies with UNSIGNED-PAYLOAD instead of a SHA-256 in the
    /// signature (default: unsigned over HTTPS, signed over plain HTTP).
    #[arg(long, env = "KAFSCALE_S3_UNSIGNED_PAYLOAD", value_parser = parse_flag)]
    pub s3_unsigned_payload: Option<bool>,
}

/// The object-store health thresholds (names and defaults of the Go Kafscale,
/// plus the failure streak and the minimum sample count).
#[derive(Debug, Clone, Args)]
pub struct S3HealthArgs {
    /// Window of the object-store health rating (error rate and average latency), in seconds.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_WINDOW_SEC", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub s3_health_window_sec: u64,
    /// Average latency over the window at which the store is degraded.
    #[arg(long, env = "KAFSCALE_S3_LATENCY_WARN_MS", default_value_t = 500)]
    pub s3_latency_warn_ms: u64,
    /// Average latency over the window at which the store is unavailable.
    #[arg(long, env = "KAFSCALE_S3_LATENCY_CRIT_MS", default_value_t = 3000)]
    pub s3_latency_crit_ms: u64,
    /// Share of failed requests over the window at which the store is degraded.
    #[arg(long, env = "KAFSCALE_S3_ERROR_RATE_WARN", default_value_t = 0.2)]
    pub s3_error_rate_warn: f64,
    /// Share of failed requests over the window at which the store is unavailable.
    #[arg(long, env = "KAFSCALE_S3_ERROR_RATE_CRIT", default_value_t = 0.6)]
    pub s3_error_rate_crit: f64,
    /// Failed requests of one operation in a row (no success between) that make the
    /// store unavailable at once; its next success ends the outage.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_FAILURE_STREAK", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub s3_health_failure_streak: u32,
    /// Requests the window must hold before its error rate and latency are rated.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_MIN_SAMPLES", default_value_t = 10)]
    pub s3_health_min_samples: u64,
}

impl S3HealthArgs {
    pub fn config(&self) -> HealthConfig {
        HealthConfig {
            window: Duration::from_secs(self.s3_health_window_sec),
            latency_warn: Duration::from_millis(self.s3_latency_warn_ms),
            latency_crit: Duration::from_millis(self.s3_latency_crit_ms),
            error_rate_warn: self.s3_error_rate_warn,
            error_rate_crit: self.s3_error_rate_crit,
            failure_streak: self.s3_health_failure_streak,
            min_samples: self.s3_health_min_samples,
        }
    }

    /// Checks what clap cannot: the warning thresholds are below the critical ones.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0;
        if !rate_ok(self.s3_error_rate_warn) || !rate_ok(self.s3_error_rate_crit) {
            return Err(ConfigError::S3ErrorRatesNotPositive);
        }
        if self.s3_error_rate_warn > self.s3_error_rate_crit {
            return Err(ConfigError::S3ErrorRatesInverted);
        }
        if self.s3_latency_warn_ms > self.s3_latency_crit_ms {
            return Err(ConfigError::S3LatenciesInverted);
        }
        Ok(())
    }
}

/// Accepts the spellings deployments use for booleans: 1/0, true/false, yes/no.
/// A clap value parser: clap wants `Result<_, String>` (or any error it can box)
/// and prints the text after the flag's name, so a String is the end product here.
fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// KAFSCALE_LOCAL_COMMIT: what makes a local acks=all commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalCommit {
    Files,
    Log,
}

/// KAFSCALE_LOCAL_IO: who writes the local directory store's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalIo {
    Thread,
    Uring,
}

impl Config {
    pub fn advertised_host(&self) -> String {
        self.broker_host
            .clone()
            .unwrap_or_else(|| self.broker_addr.ip().to_string())
    }
    pub fn advertised_port(&self) -> i32 {
        self.broker_port.unwrap_or(self.broker_addr.port()) as i32
    }

    /// Checks values clap cannot, so that a bad setting fails at start-up with its name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes < 1024 {
            return Err(ConfigError::SegmentBytesTooSmall);
        }
        if self.flush_interval_ms == 0 {
            return Err(ConfigError::FlushIntervalZero);
        }
        if self
            .flush_min_interval_ms
            .is_some_and(|m| m > self.flush_interval_ms)
        {
            return Err(ConfigError::FlushMinInterval);
        }
        if self.auto_create_partitions < 1 {
            return Err(ConfigError::AutoCreatePartitionsTooFew);
        }
        if self.max_buffered_bytes < self.segment_bytes {
            return Err(ConfigError::MaxBufferedBelowSegment);
        }
        if self.upload_concurrency == 0 || self.io_threads == 0 {
            return Err(ConfigError::ConcurrencyZero);
        }
        if self.group_min_session_timeout_ms <= 0
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(ConfigError::SessionTimeouts);
        }
        if self.group_consumer_heartbeat_interval_ms == 0
            || self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms
            || self.group_consumer_session_timeout_ms > i32::MAX as u64
        {
            return Err(ConfigError::ConsumerGroupTimeouts);
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError::ConnectionsZero);
        }
        if self.max_non_produce_request_bytes > self.max_request_bytes
            || self.max_non_produce_request_bytes < 1024
        {
            return Err(ConfigError::NonProduceRequestBytes);
        }
        if self.connections_max_idle_ms == 0 || self.request_read_timeout_ms == 0 {
            return Err(ConfigError::ConnectionTimeoutsZero);
        }
        if self.max_partitions_per_topic < 1 || self.max_topics == 0 || self.max_partitions == 0 {
            return Err(ConfigError::ResourceLimitsZero);
        }
        if matches!(self.shards, Some(0)) {
            return Err(ConfigError::ShardsZero);
        }
        if self.etcd.etcd_timeout_ms < 100 {
            return Err(ConfigError::EtcdTimeoutTooShort);
        }
        if self.etcd.etcd_lease_ttl_sec < 2 {
            return Err(ConfigError::EtcdLeaseTtlTooShort);
        }
        self.s3_health.validate()
    }
}

impl Config {
    /// The settings every layer below the command line reads.
    pub fn settings(&self) -> crate::settings::Settings {
        crate::settings::Settings {
            broker_id: self.broker_id,
            auto_create_topics: self.auto_create_topics,
            auto_create_partitions: self.auto_create_partitions,
            max_request_bytes: self.max_request_bytes,
            max_non_produce_request_bytes: self.max_non_produce_request_bytes,
            admission: crate::admission::AdmissionLimits {
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                queued_max_request_bytes: self.queued_max_request_bytes,
            },
            connections_max_idle: Duration::from_millis(self.connections_max_idle_ms),
            request_read_timeout: Duration::from_millis(self.request_read_timeout_ms),
            max_message_bytes: self.max_message_bytes,
            limits: crate::settings::ResourceLimits {
                max_topics: self.max_topics,
                max_partitions_per_topic: self.max_partitions_per_topic,
                max_partitions: self.max_partitions,
            },
            trace_kafka: self.trace_kafka,
            offset_metadata_max_bytes: self.offset_metadata_max_bytes,
            throughput_window_sec: self.throughput_window_sec,
            log: self.log_settings(),
            groups: self.group_config(),
            store: crate::settings::StoreSettings {
                bucket: self.s3.s3_bucket.clone(),
                region: self.s3.s3_region.clone(),
                endpoint: self.s3.s3_endpoint.clone(),
                log_dir: match (&self.s3.s3_bucket, self.use_memory_s3) {
                    (_, true) => format!("memory://{}", self.s3.s3_namespace),
                    (Some(bucket), false) => format!("s3://{bucket}/{}", self.s3.s3_namespace),
                    (None, false) => format!(
                        "file://{}/{}",
                        self.data_dir.join("objects").display(),
                        self.s3.s3_namespace
                    ),
                },
            },
            // The listeners and TLS are read at start (`boot.rs`), which
            // replaces this with the full settings.
            security: std::sync::Arc::new(crate::security::SecuritySettings::plaintext(
                crate::security::Listener {
                    name: "PLAINTEXT".into(),
                    protocol: crate::security::SecurityProtocol::Plaintext,
                    bind: self.broker_addr,
                    advertised_host: self.advertised_host(),
                    advertised_port: Some(self.advertised_port() as u16),
                },
            )),
        }
    }

    /// The group coordinator's settings.
    fn group_config(&self) -> crate::groups::coordinator::GroupConfig {
        crate::groups::coordinator::GroupConfig {
            initial_rebalance_delay: std::time::Duration::from_millis(
                self.group_initial_rebalance_delay_ms,
            ),
            min_session_timeout_ms: self.group_min_session_timeout_ms,
            max_session_timeout_ms: self.group_max_session_timeout_ms,
            consumer: crate::groups::consumer::ConsumerConfig {
                session_timeout: std::time::Duration::from_millis(
                    self.group_consumer_session_timeout_ms,
                ),
                heartbeat_interval: std::time::Duration::from_millis(
                    self.group_consumer_heartbeat_interval_ms,
                ),
            },
        }
    }

    /// Group commit's lower bound: as set, or by store. A local directory or
    /// memory charges nothing per object, so it commits whenever it can; S3
    /// charges per PUT, so a partition seals at most 20 segments (40 PUTs) a
    /// second: twice the rate of a 100 ms tick, for at most 50 ms of waiting
    /// instead of 100 (the cost table is in docs/benchmarks.md).
    pub fn flush_min_interval_ms(&self) -> u64 {
        let by_store = if self.s3.s3_bucket.is_some() && !self.use_memory_s3 {
            S3_FLUSH_MIN_INTERVAL_MS
        } else {
            0
        };
        self.flush_min_interval_ms
            .unwrap_or(by_store.min(self.flush_interval_ms))
    }

    /// The log layer's settings (a plain struct: the layers below the command
    /// line never see clap types).
    fn log_settings(&self) -> crate::partition::LogSettings {
        crate::partition::LogSettings {
            segment_bytes: self.segment_bytes,
            flush_interval: std::time::Duration::from_millis(self.flush_interval_ms),
            flush_min_interval: Duration::from_millis(self.flush_min_interval_ms()),
            readahead_segments: self.readahead_segments,
            retention_check_interval: std::time::Duration::from_millis(
                self.retention_check_interval_ms,
            ),
            cleaner_backoff: Duration::from_millis(self.log_cleaner_backoff_ms),
            max_buffered_bytes: self.max_buffered_bytes,
            upload_concurrency: self.upload_concurrency,
            cache_bytes: self.cache_bytes,
            producer_id_expiration: Duration::from_millis(self.producer_id_expiration_ms),
        }
    }
}

/// The default of KAFSCALE_FLUSH_MIN_INTERVAL_MS on S3.
pub const S3_FLUSH_MIN_INTERVAL_MS: u64 = 50;

/// A setting clap accepted but the broker cannot run with; the text names the
/// setting (its environment variable) and the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("KAFSCALE_SEGMENT_BYTES must be at least 1024")]
    SegmentBytesTooSmall,
    #[error("KAFSCALE_FLUSH_INTERVAL_MS must be positive")]
    FlushIntervalZero,
    #[error("KAFSCALE_FLUSH_MIN_INTERVAL_MS must be at most KAFSCALE_FLUSH_INTERVAL_MS")]
    FlushMinInterval,
    #[error("KAFSCALE_AUTO_CREATE_PARTITIONS must be at least 1")]
    AutoCreatePartitionsTooFew,
    #[error("KAFSCALE_MAX_BUFFERED_BYTES must be at least KAFSCALE_SEGMENT_BYTES")]
    MaxBufferedBelowSegment,
    #[error("KAFSCALE_UPLOAD_CONCURRENCY and KAFSCALE_IO_THREADS must be positive")]
    ConcurrencyZero,
    #[error("KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS must be positive and at most KAFSCALE_GROUP_MAX_SESSION_TIMEOUT_MS")]
    SessionTimeouts,
    #[error("KAFSCALE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS must be positive and below KAFSCALE_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    ConsumerGroupTimeouts,
    #[error("KAFSCALE_MAX_CONNECTIONS and KAFSCALE_MAX_CONNECTIONS_PER_IP must be positive")]
    ConnectionsZero,
    #[error("KAFSCALE_MAX_NON_PRODUCE_REQUEST_BYTES must be at least 1024 and at most KAFSCALE_MAX_REQUEST_BYTES")]
    NonProduceRequestBytes,
    #[error(
        "KAFSCALE_CONNECTIONS_MAX_IDLE_MS and KAFSCALE_REQUEST_READ_TIMEOUT_MS must be positive"
    )]
    ConnectionTimeoutsZero,
    #[error("KAFSCALE_MAX_TOPICS, KAFSCALE_MAX_PARTITIONS and KAFSCALE_MAX_PARTITIONS_PER_TOPIC must be positive")]
    ResourceLimitsZero,
    #[error("KAFSCALE_SHARDS must be positive")]
    ShardsZero,
    #[error("KAFSCALE_ETCD_TIMEOUT_MS must be at least 100")]
    EtcdTimeoutTooShort,
    #[error("KAFSCALE_ETCD_LEASE_TTL_SEC must be at least 2")]
    EtcdLeaseTtlTooShort,
    #[error("KAFSCALE_S3_ERROR_RATE_WARN and KAFSCALE_S3_ERROR_RATE_CRIT must be positive")]
    S3ErrorRatesNotPositive,
    #[error("KAFSCALE_S3_ERROR_RATE_WARN must be at most KAFSCALE_S3_ERROR_RATE_CRIT")]
    S3ErrorRatesInverted,
    #[error("KAFSCALE_S3_LATENCY_WARN_MS must be at most KAFSCALE_S3_LATENCY_CRIT_MS")]
    S3LatenciesInverted,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let argv = ["kafscale-broker"].iter().chain(args).copied();
        Cli::try_parse_from(argv).expect("settings").config
    }

    #[test]
    fn bad_settings_are_typed_and_named() {
        assert_eq!(parse(&[]).validate(), Ok(()));
        let e = parse(&["--segment-bytes", "10"]).validate().unwrap_err();
        assert_eq!(e, ConfigError::SegmentBytesTooSmall);
        assert_eq!(
            e.to_string(),
            "KAFSCALE_SEGMENT_BYTES must be at least 1024"
        );
        let e = parse(&["--shards", "0"]).validate().unwrap_err();
        assert_eq!(e.to_string(), "KAFSCALE_SHARDS must be positive");
        let e = parse(&["--s3-latency-warn-ms", "5000"])
            .validate()
            .unwrap_err();
        assert_eq!(e, ConfigError::S3LatenciesInverted);
        assert_eq!(
            e.to_string(),
            "KAFSCALE_S3_LATENCY_WARN_MS must be at most KAFSCALE_S3_LATENCY_CRIT_MS"
        );
    }

    #[test]
    fn group_commit_lower_bound_follows_the_store() {
        assert_eq!(parse(&[]).flush_min_interval_ms(), 0);
        assert_eq!(parse(&["--use-memory-s3"]).flush_min_interval_ms(), 0);
        let s3 = parse(&["--s3-bucket", "b"]);
        assert_eq!(s3.flush_min_interval_ms(), S3_FLUSH_MIN_INTERVAL_MS);
        // Never above the upper bound unless set so (which is refused).
        let short = parse(&["--s3-bucket", "b", "--flush-interval-ms", "20"]);
        assert_eq!(short.flush_min_interval_ms(), 20);
        assert_eq!(short.validate(), Ok(()));
        let set = parse(&["--s3-bucket", "b", "--flush-min-interval-ms", "0"]);
        assert_eq!(set.flush_min_interval_ms(), 0);
        let e = parse(&["--flush-min-interval-ms", "200"])
            .validate()
            .unwrap_err();
        assert_eq!(e, ConfigError::FlushMinInterval);
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = parse(&[
            "--s3-secret-key",
            "very-secret-1",
            "--s3-session-token",
            "very-secret-2",
            "--etcd-password",
            "very-secret-3",
            "--s3-access-key",
            "AKIA",
        ]);
        let text = format!("{c:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("AKIA"));
    }
}
