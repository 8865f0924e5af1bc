//! The topic configs Kafscale accepts, one row of [`TOPIC_CONFIGS`] each: Kafka
//! name, Kafka type, the rule a value must meet, the default, and the
//! documentation DescribeConfigs returns. The brokers (CreateTopics, AlterConfigs,
//! IncrementalAlterConfigs, DescribeConfigs) and the operator (`KafscaleTopic`)
//! validate with [`check`], so a value one accepts the other accepts too.
//!
//! A further config is a further row (and, when no existing [`Rule`] fits, a new
//! rule); what a broker does with it is the broker's business.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// An integer in `min..=max`.
    Range { min: i64, max: i64 },
    /// One of `allowed`; `why` says why the others are refused.
    OneOf {
        allowed: &'static [&'static str],
        why: &'static str,
    },
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

/// One supported topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub rule: Rule,
    pub default: ConfigDefault,
    pub doc: &'static str,
}

/// Kafscale keeps data until told otherwise (unlike Kafka's 7-day default).
pub const DEFAULT_RETENTION_MS: i64 = -1;
pub const DEFAULT_RETENTION_BYTES: i64 = -1;

/// Every supported topic config, sorted by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        ty: ConfigType::List,
        rule: Rule::OneOf {
            allowed: &["delete"],
            why: "compaction is not supported",
        },
        default: ConfigDefault::Value("delete"),
        doc: "Only \"delete\": old segments are deleted by retention. Compaction is not supported.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        ty: ConfigType::Long,
        rule: Rule::Range {
            min: -1,
            max: i64::MAX,
        },
        default: ConfigDefault::Value("-1"),
        doc: "Largest size a partition's log may keep before its oldest segments are deleted; -1 for no limit.",
    },
    TopicConfigDef {
        name: "retention.ms",
        ty: ConfigType::Long,
        rule: Rule::Range {
            min: -1,
            max: i64::MAX,
        },
        default: ConfigDefault::Value("-1"),
        doc: "Longest time a segment is kept after its newest record's timestamp; -1 for no limit.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        ty: ConfigType::Int,
        // Kafka's segment.bytes is an int, and the broker's buffers are usize.
        rule: Rule::Range {
            min: 1,
            max: i32::MAX as i64,
        },
        default: ConfigDefault::Broker("kafscale.segment.bytes"),
        doc: "Size at which a partition's active segment is sealed and uploaded; the broker's kafscale.segment.bytes when unset.",
    },
];

/// Why a topic config was refused; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
        ("cleanup.policy", Some("compact"), false),
        ("cleanup.policy", Some("compact,delete"), false),
        ("cleanup.policy", None, false),
        ("max.message.bytes", Some("1"), false),
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
    fn messages_name_the_config() {
        let msg = |n, v| check(n, v).unwrap_err().to_string();
        assert_eq!(
            msg("retention.ms", Some("-2")),
            "retention.ms must be an integer in -1..=9223372036854775807"
        );
        assert_eq!(
            msg("cleanup.policy", Some("compact")),
            "cleanup.policy must be delete (compaction is not supported)"
        );
        assert_eq!(
            msg("max.message.bytes", Some("1")),
            "config max.message.bytes is not supported"
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
            if let Rule::Range { max, .. } = d.rule {
                match d.ty {
                    ConfigType::Int => assert!(max <= i32::MAX as i64, "{}", d.name),
                    ConfigType::Short => assert!(max <= i16::MAX as i64, "{}", d.name),
                    ConfigType::Long => {}
                    other => panic!("{}: a range rule on a {other:?}", d.name),
                }
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
