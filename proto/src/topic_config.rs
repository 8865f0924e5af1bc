//! The topic configs Kafscale accepts, one row of [`TOPIC_CONFIGS`] each: Kafka
//! name, Kafka type, the rule a value must meet, the default, and the
//! documentation DescribeConfigs returns. The brokers (CreateTopics, AlterConfigs,
//! IncrementalAlterConfigs, DescribeConfigs) and the operator (`KafscaleTopic`)
//! validate with [`check`], so a value one accepts the other accepts too.
//!
//! Every standard Kafka 3.9 topic config has a row; [`Effect`] says whether the
//! broker applies it, and `doc` why not when it does not. What a broker does with
//! a config it applies is the broker's business.

/// Kafka's config types, with their DescribeConfigs (v3+) numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Class = 8,
    Password = 9,
}

impl ConfigType {
    /// The number DescribeConfigs carries.
    pub fn kafka_id(self) -> i8 {
        self as i8
    }
}

/// What a value must be. Surrounding whitespace is ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// An integer in `min..=max`.
    Range { min: i64, max: i64 },
    /// One of `allowed`; `why` says why the others are refused.
    OneOf {
        allowed: &'static [&'static str],
        why: &'static str,
    },
    /// A comma-separated, non-empty list of items from `allowed`, each once.
    ListOf { allowed: &'static [&'static str] },
    /// `true` or `false` (any case, as Kafka parses booleans).
    Boolean,
    /// A decimal number in `min..=max`.
    Fraction { min: f64, max: f64 },
    /// Any string (a list of replicas, a message format version).
    Text,
}

/// Where the value of a config a topic does not set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigDefault {
    /// A fixed value (DescribeConfigs source `DEFAULT_CONFIG`).
    Value(&'static str),
    /// The broker config of this name, a synonym of the topic config
    /// (source `STATIC_BROKER_CONFIG`).
    Broker(&'static str),
}

/// What the broker does with a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Enforced as Kafka enforces it.
    Applied,
    /// Accepted, stored and described, without effect; the reason is in `doc`.
    /// Kafka's tools and operators set these (Strimzi and Terraform specs set
    /// `min.insync.replicas`), so refusing them would break them for nothing.
    Ignored,
}

/// One supported topic config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub rule: Rule,
    pub default: ConfigDefault,
    pub effect: Effect,
    pub doc: &'static str,
}

/// Kafscale keeps data until told otherwise (unlike Kafka's 7-day default).
pub const DEFAULT_RETENTION_MS: i64 = -1;
pub const DEFAULT_RETENTION_BYTES: i64 = -1;
/// The longest free-text value (every other rule bounds its values by itself), so
/// that what a topic stores stays small.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Kafka's default segment.ms: 7 days.
pub const DEFAULT_SEGMENT_MS: i64 = 7 * 24 * 3600 * 1000;

const LONG: Rule = Rule::Range {
    min: 0,
    max: i64::MAX,
};
const LONG_FROM_1: Rule = Rule::Range {
    min: 1,
    max: i64::MAX,
};
const INT: Rule = Rule::Range {
    min: 0,
    max: i32::MAX as i64,
};
/// Kafka's i64::MAX default, as text.
const LONG_MAX: &str = "9223372036854775807";

const fn def(
    name: &'static str,
    ty: ConfigType,
    rule: Rule,
    default: ConfigDefault,
    effect: Effect,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        ty,
        rule,
        default,
        effect,
        doc,
    }
}

use ConfigDefault::{Broker, Value};
use ConfigType as T;
use Effect::{Applied, Ignored as NoEffect};

/// Every standard Kafka (3.9) topic config, sorted by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        T::List,
        Rule::ListOf {
            allowed: &["delete", "compact"],
        },
        Value("delete"),
        Applied,
        "\"delete\": retention deletes old segments; \"compact\": the log cleaner keeps the newest record per key in the closed segments (docs/compaction.md) and records without a key are refused; retention.ms and retention.bytes delete segments only when \"delete\" is listed too.",
    ),
    def(
        "compression.type",
        T::String,
        Rule::OneOf {
            allowed: &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
            why: "Kafka's codecs",
        },
        Value("producer"),
        NoEffect,
        "Batches are stored as the producer compressed them (\"producer\"); other values are accepted and not applied (the broker never recompresses).",
    ),
    def(
        "delete.retention.ms",
        T::Long,
        LONG,
        Value("86400000"),
        Applied,
        "How long a tombstone stays after the cleaning that first kept it (KIP-534's delete horizon).",
    ),
    def(
        "file.delete.delay.ms",
        T::Long,
        LONG,
        Value("60000"),
        NoEffect,
        "No local files: retention deletes objects when their readers are done.",
    ),
    def(
        "flush.messages",
        T::Long,
        LONG_FROM_1,
        Value(LONG_MAX),
        NoEffect,
        "Durability comes from the object store upload (KAFSCALE_FLUSH_INTERVAL_MS and segment.bytes), not from fsync.",
    ),
    def(
        "flush.ms",
        T::Long,
        LONG,
        Value(LONG_MAX),
        NoEffect,
        "Durability comes from the object store upload (KAFSCALE_FLUSH_INTERVAL_MS and segment.bytes), not from fsync.",
    ),
    def(
        "follower.replication.throttled.replicas",
        T::List,
        Rule::Text,
        Value(""),
        NoEffect,
        "No replicas: the object store holds the only copy a broker needs.",
    ),
    def(
        "index.interval.bytes",
        T::Int,
        INT,
        Value("4096"),
        NoEffect,
        "The segment index has an entry per batch boundary after a number of messages, not bytes.",
    ),
    def(
        "leader.replication.throttled.replicas",
        T::List,
        Rule::Text,
        Value(""),
        NoEffect,
        "No replicas: the object store holds the only copy a broker needs.",
    ),
    def(
        "local.retention.bytes",
        T::Long,
        Rule::Range {
            min: -2,
            max: i64::MAX,
        },
        Value("-2"),
        NoEffect,
        "Tiered storage: every segment is in the object store already.",
    ),
    def(
        "local.retention.ms",
        T::Long,
        Rule::Range {
            min: -2,
            max: i64::MAX,
        },
        Value("-2"),
        NoEffect,
        "Tiered storage: every segment is in the object store already.",
    ),
    def(
        "max.compaction.lag.ms",
        T::Long,
        LONG_FROM_1,
        Value(LONG_MAX),
        Applied,
        "A partition whose oldest uncleaned segment is older than this is cleaned whatever its dirty ratio.",
    ),
    def(
        "max.message.bytes",
        T::Int,
        INT,
        Broker("message.max.bytes"),
        Applied,
        "Largest record batch the topic accepts; larger ones get MESSAGE_TOO_LARGE. The broker's message.max.bytes (KAFSCALE_MAX_MESSAGE_BYTES) when unset.",
    ),
    def(
        "message.downconversion.enable",
        T::Boolean,
        Rule::Boolean,
        Value("true"),
        NoEffect,
        "Fetch v0-3 (message format v0/v1) is not served, so nothing is down-converted.",
    ),
    def(
        "message.format.version",
        T::String,
        Rule::Text,
        Value("3.0-IV1"),
        NoEffect,
        "Deprecated in Kafka 3; batches are always stored in format v2.",
    ),
    def(
        "message.timestamp.after.max.ms",
        T::Long,
        LONG,
        Value(LONG_MAX),
        NoEffect,
        "Record timestamps are not checked against the broker's clock.",
    ),
    def(
        "message.timestamp.before.max.ms",
        T::Long,
        LONG,
        Value(LONG_MAX),
        NoEffect,
        "Record timestamps are not checked against the broker's clock.",
    ),
    def(
        "message.timestamp.difference.max.ms",
        T::Long,
        LONG,
        Value(LONG_MAX),
        NoEffect,
        "Deprecated in Kafka 3.6; record timestamps are not checked against the broker's clock.",
    ),
    def(
        "message.timestamp.type",
        T::String,
        Rule::OneOf {
            allowed: &["CreateTime", "LogAppendTime"],
            why: "Kafka's timestamp types",
        },
        Value("CreateTime"),
        Applied,
        "CreateTime keeps the producer's timestamps; LogAppendTime makes the broker stamp every batch with its append time (consumers read it as each record's timestamp).",
    ),
    def(
        "min.cleanable.dirty.ratio",
        T::Double,
        Rule::Fraction { min: 0.0, max: 1.0 },
        Value("0.5"),
        Applied,
        "The cleaner runs when the uncleaned bytes reach this share of the cleanable segments.",
    ),
    def(
        "min.compaction.lag.ms",
        T::Long,
        LONG,
        Value("0"),
        Applied,
        "Segments holding a record younger than this are not cleaned.",
    ),
    def(
        "min.insync.replicas",
        T::Int,
        Rule::Range {
            min: 1,
            max: i32::MAX as i64,
        },
        Value("1"),
        NoEffect,
        "No replicas: an acks=all batch is acknowledged once the object store has it, which is the durability this setting asks for.",
    ),
    def(
        "preallocate",
        T::Boolean,
        Rule::Boolean,
        Value("false"),
        NoEffect,
        "No local segment files to preallocate.",
    ),
    def(
        "remote.log.copy.disable",
        T::Boolean,
        Rule::Boolean,
        Value("false"),
        NoEffect,
        "Tiered storage: every segment is in the object store already.",
    ),
    def(
        "remote.log.delete.on.disable",
        T::Boolean,
        Rule::Boolean,
        Value("false"),
        NoEffect,
        "Tiered storage: every segment is in the object store already.",
    ),
    def(
        "remote.storage.enable",
        T::Boolean,
        Rule::Boolean,
        Value("false"),
        NoEffect,
        "Tiered storage: every segment is in the object store already.",
    ),
    def(
        "retention.bytes",
        T::Long,
        Rule::Range {
            min: -1,
            max: i64::MAX,
        },
        Value("-1"),
        Applied,
        "Largest size a partition's log may keep before its oldest segments are deleted; -1 for no limit.",
    ),
    def(
        "retention.ms",
        T::Long,
        Rule::Range {
            min: -1,
            max: i64::MAX,
        },
        Value("-1"),
        Applied,
        "Longest time a segment is kept after its newest record's timestamp; -1 for no limit.",
    ),
    // Kafka's segment.bytes is an int, and the broker's buffers are usize.
    def(
        "segment.bytes",
        T::Int,
        Rule::Range {
            min: 1,
            max: i32::MAX as i64,
        },
        Broker("kafscale.segment.bytes"),
        Applied,
        "Size at which a partition's active segment is sealed and uploaded; the broker's kafscale.segment.bytes when unset.",
    ),
    def(
        "segment.index.bytes",
        T::Int,
        Rule::Range {
            min: 4,
            max: i32::MAX as i64,
        },
        Value("10485760"),
        NoEffect,
        "The segment index is sized by its entries, not preallocated.",
    ),
    def(
        "segment.jitter.ms",
        T::Long,
        LONG,
        Value("0"),
        NoEffect,
        "Segments are sealed on the flush interval's wall-clock ticks already, so there is no roll storm to spread.",
    ),
    def(
        "segment.ms",
        T::Long,
        LONG_FROM_1,
        Value("604800000"),
        Applied,
        "Age at which the active segment is sealed on the next append (Kafka's roll); the flush interval (KAFSCALE_FLUSH_INTERVAL_MS) seals sooner when it is shorter.",
    ),
    def(
        "unclean.leader.election.enable",
        T::Boolean,
        Rule::Boolean,
        Value("false"),
        NoEffect,
        "No replicas that could fall behind: a new owner reads the same log from the object store.",
    ),
];

/// Why a topic config was refused; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopicConfigError {
    #[error("config {name} is not supported")]
    Unsupported { name: String },
    #[error("{name} must be an integer in {min}..={max}")]
    OutOfRange {
        name: &'static str,
        min: i64,
        max: i64,
    },
    #[error("{name} must be {} ({why})", .allowed.join(" or "))]
    NotAllowed {
        name: &'static str,
        allowed: &'static [&'static str],
        why: &'static str,
    },
    #[error("{name} must be a comma-separated list of {}, each once", .allowed.join(", "))]
    NotInList {
        name: &'static str,
        allowed: &'static [&'static str],
    },
    #[error("{name} must be true or false")]
    NotBoolean { name: &'static str },
    #[error("{name} must be a number in {min}..={max}")]
    OutOfFraction {
        name: &'static str,
        min: f64,
        max: f64,
    },
    #[error("{name} needs a value")]
    Missing { name: &'static str },
    #[error("{name} must be at most {max} bytes")]
    TooLong { name: &'static str, max: usize },
}

/// The row of a supported config.
pub fn lookup(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Validates one config (a missing value is invalid: deleting a config is not
/// setting it).
pub fn check(name: &str, value: Option<&str>) -> Result<(), TopicConfigError> {
    match lookup(name) {
        Some(def) => def.check(value),
        None => Err(TopicConfigError::Unsupported { name: name.into() }),
    }
}

impl TopicConfigDef {
    pub fn check(&self, value: Option<&str>) -> Result<(), TopicConfigError> {
        let value = value.map(str::trim);
        match self.rule {
            Rule::Range { min, max } => match value.and_then(|v| v.parse::<i64>().ok()) {
                Some(v) if (min..=max).contains(&v) => Ok(()),
                _ => Err(TopicConfigError::OutOfRange {
                    name: self.name,
                    min,
                    max,
                }),
            },
            Rule::OneOf { allowed, why } => match value {
                Some(v) if allowed.contains(&v) => Ok(()),
                _ => Err(TopicConfigError::NotAllowed {
                    name: self.name,
                    allowed,
                    why,
                }),
            },
            Rule::ListOf { allowed } => {
                let items: Vec<&str> = value.unwrap_or("").split(',').map(str::trim).collect();
                let each_once = items
                    .iter()
                    .enumerate()
                    .all(|(i, v)| allowed.contains(v) && !items[..i].contains(v));
                if value.is_some() && each_once {
                    Ok(())
                } else {
                    Err(TopicConfigError::NotInList {
                        name: self.name,
                        allowed,
                    })
                }
            }
            Rule::Boolean => match value {
                Some(v) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") => {
                    Ok(())
                }
                _ => Err(TopicConfigError::NotBoolean { name: self.name }),
            },
            Rule::Fraction { min, max } => match value.and_then(|v| v.parse::<f64>().ok()) {
                Some(v) if v >= min && v <= max => Ok(()),
                _ => Err(TopicConfigError::OutOfFraction {
                    name: self.name,
                    min,
                    max,
                }),
            },
            Rule::Text => match value {
                Some(v) if v.len() <= MAX_TEXT_BYTES => Ok(()),
                Some(_) => Err(TopicConfigError::TooLong {
                    name: self.name,
                    max: MAX_TEXT_BYTES,
                }),
                None => Err(TopicConfigError::Missing { name: self.name }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, value, accepted)
    const CASES: &[(&str, Option<&str>, bool)] = &[
        ("retention.ms", Some("-1"), true),
        ("retention.ms", Some("0"), true),
        ("retention.ms", Some(" 60000 "), true),
        ("retention.ms", Some("-2"), false),
        ("retention.ms", None, false),
        ("retention.bytes", Some("9223372036854775807"), true),
        ("retention.bytes", Some("abc"), false),
        ("segment.bytes", Some("1048576"), true),
        ("segment.bytes", Some("0"), false),
        ("cleanup.policy", Some("delete"), true),
        ("cleanup.policy", Some("compact"), true),
        ("cleanup.policy", Some("compact,delete"), true),
        ("cleanup.policy", Some("delete, compact"), true),
        ("cleanup.policy", Some("delete,delete"), false),
        ("cleanup.policy", Some(""), false),
        ("cleanup.policy", Some("shred"), false),
        ("cleanup.policy", None, false),
        ("max.message.bytes", Some("1"), true),
        ("max.message.bytes", Some("-1"), false),
        ("min.insync.replicas", Some("2"), true),
        ("min.insync.replicas", Some("0"), false),
        ("unclean.leader.election.enable", Some("TRUE"), true),
        ("unclean.leader.election.enable", Some("yes"), false),
        ("min.cleanable.dirty.ratio", Some("0.1"), true),
        ("min.cleanable.dirty.ratio", Some("1.5"), false),
        ("min.cleanable.dirty.ratio", Some("NaN"), false),
        ("message.timestamp.type", Some("LogAppendTime"), true),
        ("message.timestamp.type", Some("logappendtime"), false),
        ("message.format.version", Some("2.8-IV1"), true),
        ("compression.type", Some("zstd"), true),
        ("compression.type", Some("brotli"), false),
        ("segment.ms", Some("0"), false),
        ("no.such.config", Some("1"), false),
        // The rule that had drifted: the operator took any positive i64, the
        // broker only Kafka's int range. Both use this one now.
        ("segment.bytes", Some("1"), true),
        ("segment.bytes", Some("2147483647"), true),
        ("segment.bytes", Some("2147483648"), false),
        ("segment.bytes", Some("4294967296"), false),
        ("segment.bytes", Some("-1"), false),
    ];

    #[test]
    fn values_are_checked_against_their_rows() {
        for &(name, value, accepted) in CASES {
            assert_eq!(check(name, value).is_ok(), accepted, "{name}={value:?}");
        }
    }

    #[test]
    fn text_values_are_bounded() {
        let long = "0:1,".repeat(MAX_TEXT_BYTES / 4 + 1);
        let name = "leader.replication.throttled.replicas";
        assert!(check(name, Some(&long[..MAX_TEXT_BYTES])).is_ok());
        assert_eq!(
            check(name, Some(&long)),
            Err(TopicConfigError::TooLong {
                name,
                max: MAX_TEXT_BYTES
            })
        );
    }

    #[test]
    fn messages_name_the_config() {
        let msg = |n, v| check(n, v).unwrap_err().to_string();
        assert_eq!(
            msg("retention.ms", Some("-2")),
            "retention.ms must be an integer in -1..=9223372036854775807"
        );
        assert_eq!(
            msg("cleanup.policy", Some("shred")),
            "cleanup.policy must be a comma-separated list of delete, compact, each once"
        );
        assert_eq!(
            msg("max.message.bytes", Some("x")),
            "max.message.bytes must be an integer in 0..=2147483647"
        );
        assert_eq!(
            msg("no.such.config", Some("1")),
            "config no.such.config is not supported"
        );
        assert_eq!(
            msg("segment.bytes", Some("4294967296")),
            "segment.bytes must be an integer in 1..=2147483647"
        );
    }

    #[test]
    fn the_table_is_consistent() {
        let names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "sorted by name, each once");
        for d in TOPIC_CONFIGS {
            assert_eq!(lookup(d.name), Some(d));
            assert!(!d.doc.is_empty(), "{}", d.name);
            // Fixed defaults are valid values; integer ranges fit the type.
            if let ConfigDefault::Value(v) = d.default {
                assert_eq!(d.check(Some(v)), Ok(()), "{}", d.name);
            }
            match d.rule {
                Rule::Range { max, .. } => match d.ty {
                    ConfigType::Int => assert!(max <= i32::MAX as i64, "{}", d.name),
                    ConfigType::Short => assert!(max <= i16::MAX as i64, "{}", d.name),
                    ConfigType::Long => {}
                    other => panic!("{}: a range rule on a {other:?}", d.name),
                },
                Rule::Boolean => assert_eq!(d.ty, ConfigType::Boolean, "{}", d.name),
                Rule::Fraction { .. } => assert_eq!(d.ty, ConfigType::Double, "{}", d.name),
                Rule::ListOf { .. } => assert_eq!(d.ty, ConfigType::List, "{}", d.name),
                Rule::OneOf { .. } | Rule::Text => {}
            }
        }
        let default = |n| match lookup(n).map(|d| d.default) {
            Some(ConfigDefault::Value(v)) => v.parse::<i64>().ok(),
            _ => None,
        };
        assert_eq!(default("retention.ms"), Some(DEFAULT_RETENTION_MS));
        assert_eq!(default("retention.bytes"), Some(DEFAULT_RETENTION_BYTES));
    }

    #[test]
    fn kafka_type_numbers() {
        assert_eq!(ConfigType::String.kafka_id(), 2);
        assert_eq!(ConfigType::Int.kafka_id(), 3);
        assert_eq!(ConfigType::Long.kafka_id(), 5);
        assert_eq!(ConfigType::List.kafka_id(), 7);
    }
}
