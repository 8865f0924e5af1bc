//! Errors of the harness: what a run can fail on, with enough context to act on.

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
    #[error("{0}")]
    Invalid(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("a {0} thread panicked")]
    Panicked(&'static str),
    #[error("plot: {0}")]
    Plot(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;
