//! DescribeConfigs v0-v4, AlterConfigs v0-v2 and IncrementalAlterConfigs v0-v1.
//!
//! Topics expose exactly the configs of `kafscale_proto::topic_config` (the table
//! the operator validates with too): every standard Kafka topic config, with its
//! types, defaults and documentation, all alterable; the table says which ones the
//! broker applies. A change is persisted through `MetadataStore::update_topic` and
//! published to every shard as a new cluster snapshot; the owning shards apply it
//! at once (segment.bytes to the next segment, max.message.bytes and
//! message.timestamp.type to the next batch, retention on the next pass). Brokers
//! expose read-only configs under Kafka's names where Kafka has one and under
//! `kafscale.*` otherwise; altering them answers INVALID_CONFIG, as does any
//! unknown key or invalid value.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_proto::topic_config::{
    self, ConfigDefault, ConfigType, TopicConfigError, DEFAULT_RETENTION_BYTES,
    DEFAULT_RETENTION_MS, TOPIC_CONFIGS,
};

use super::topics::update_topic;
use crate::errors::*;
use crate::shard::Shard;

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources (DescribeConfigs v1+).
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// The new value of list config `key` of `topic` after APPEND or SUBTRACT of the
/// comma-separated items in `value`, checked. Computed from the cluster snapshot
/// this shard has (the current value, or the default when the topic does not
/// set it); the write itself is serialised on the metadata shard.
fn list_change(
    shard: &Shard,
    topic: &str,
    key: &str,
    op: i8,
    value: Option<&str>,
) -> Result<String, String> {
    let def = topic_config::lookup(key).ok_or_else(|| {
        TopicConfigError::Unsupported {
            name: key.to_string(),
        }
        .to_string()
    })?;
    if def.ty != ConfigType::List {
        return Err(format!(
            "{key} is not a list: APPEND and SUBTRACT do not apply"
        ));
    }
    let current = shard
        .cluster()
        .topic(topic)
        .and_then(|t| t.configs.get(key).cloned())
        .or(match def.default {
            ConfigDefault::Value(v) => Some(v.to_string()),
            ConfigDefault::Broker(_) => None,
        })
        .unwrap_or_default();
    let mut items: Vec<String> = current
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(String::from)
        .collect();
    for item in value.unwrap_or_default().split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let at = items.iter().position(|i| i == item);
        match (op, at) {
            (OP_APPEND, None) => items.push(item.to_string()),
            (OP_SUBTRACT, Some(at)) => {
                items.remove(at);
            }
            _ => {}
        }
    }
    let joined = items.join(",");
    def.check(Some(&joined)).map_err(|e| e.to_string())?;
    Ok(joined)
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

struct Entry {
    name: &'static str,
    value: Option<String>,
    read_only: bool,
    source: i8,
    ty: i8,
    doc: &'static str,
    /// (name, value, source), most specific first, as Kafka orders synonyms.
    synonyms: Vec<(String, Option<String>, i8)>,
}

fn encode_entry(e: Entry, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let mut r = DescribeConfigsResourceResult::default();
    r.name = StrBytes::from_static_str(e.name);
    r.value = e.value.map(s);
    r.read_only = e.read_only;
    r.config_source = e.source;
    // v0 (Kafka 3.x clients) has a flag instead of the source.
    r.is_default = e.source == SOURCE_DEFAULT;
    r.is_sensitive = false;
    r.config_type = e.ty;
    if docs {
        r.documentation = Some(StrBytes::from_static_str(e.doc));
    }
    if synonyms {
        r.synonyms = e
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                let mut y = DescribeConfigsSynonym::default();
                y.name = s(name);
                y.value = value.map(s);
                y.source = source;
                y
            })
            .collect();
    }
    r
}

fn topic_entries(shard: &Shard, configs: &BTreeMap<String, String>) -> Vec<Entry> {
    let broker = broker_entries(shard);
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let name = def.name;
            // The default and where it comes from.
            let (default, default_name, default_source) = match def.default {
                ConfigDefault::Value(v) => (v.to_string(), name, SOURCE_DEFAULT),
                ConfigDefault::Broker(setting) => (
                    broker
                        .iter()
                        .find(|e| e.name == setting)
                        .and_then(|e| e.value.clone())
                        .unwrap_or_default(),
                    setting,
                    SOURCE_STATIC_BROKER,
                ),
            };
            let mut synonyms = Vec::new();
            let (value, source) = match configs.get(name) {
                Some(v) => {
                    synonyms.push((name.to_string(), Some(v.clone()), SOURCE_DYNAMIC_TOPIC));
                    (v.clone(), SOURCE_DYNAMIC_TOPIC)
                }
                None => (default.clone(), default_source),
            };
            synonyms.push((default_name.to_string(), Some(default), default_source));
            Entry {
                name,
                value: Some(value),
                read_only: false,
                source,
                ty: def.ty.kafka_id(),
                doc: def.doc,
                synonyms,
            }
        })
        .collect()
}

fn broker_entries(shard: &Shard) -> Vec<Entry> {
    let cfg = &shard.settings;
    let cluster = shard.cluster();
    let entry = |name: &'static str,
                 value: Option<String>,
                 ty: ConfigType,
                 source: i8,
                 doc: &'static str| Entry {
        name,
        synonyms: vec![(name.to_string(), value.clone(), source)],
        value,
        read_only: true,
        source,
        ty: ty.kafka_id(),
        doc,
    };
    // From the broker's configuration (a KAFSCALE_* variable or its default).
    let ro = |name, value, ty, doc| entry(name, value, ty, SOURCE_STATIC_BROKER, doc);
    // Fixed by Kafscale's design: what Kafka's setting of that name would need to be.
    let fixed =
        |name, value: &str, ty, doc| entry(name, Some(value.to_string()), ty, SOURCE_DEFAULT, doc);
    vec![
        ro(
            "message.max.bytes",
            Some(cfg.max_message_bytes.to_string()),
            ConfigType::Int,
            "KAFSCALE_MAX_MESSAGE_BYTES: the largest record batch of a topic without its own max.message.bytes",
        ),
        ro(
            "socket.request.max.bytes",
            Some(cfg.max_request_bytes.to_string()),
            ConfigType::Int,
            "KAFSCALE_MAX_REQUEST_BYTES",
        ),
        ro(
            "auto.create.topics.enable",
            Some(cfg.auto_create_topics.to_string()),
            ConfigType::Boolean,
            "KAFSCALE_AUTO_CREATE_TOPICS",
        ),
        ro(
            "num.partitions",
            Some(cfg.auto_create_partitions.to_string()),
            ConfigType::Int,
            "KAFSCALE_AUTO_CREATE_PARTITIONS: partitions of an auto-created topic",
        ),
        ro(
            "log.segment.bytes",
            Some(cfg.log.segment_bytes.to_string()),
            ConfigType::Int,
            "KAFSCALE_SEGMENT_BYTES",
        ),
        ro(
            "log.cleaner.backoff.ms",
            Some(cfg.log.cleaner_backoff.as_millis().to_string()),
            ConfigType::Long,
            "KAFSCALE_LOG_CLEANER_BACKOFF_MS: pause between the log cleaner's passes",
        ),
        ro(
            "group.initial.rebalance.delay.ms",
            Some(cfg.groups.initial_rebalance_delay.as_millis().to_string()),
            ConfigType::Int,
            "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        ),
        ro(
            "group.min.session.timeout.ms",
            Some(cfg.groups.min_session_timeout_ms.to_string()),
            ConfigType::Int,
            "KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS",
        ),
        ro(
            "group.max.session.timeout.ms",
            Some(cfg.groups.max_session_timeout_ms.to_string()),
            ConfigType::Int,
            "KAFSCALE_GROUP_MAX_SESSION_TIMEOUT_MS",
        ),
        fixed(
            "default.replication.factor",
            "1",
            ConfigType::Int,
            "No replicas: the object store keeps the data",
        ),
        fixed(
            "min.insync.replicas",
            "1",
            ConfigType::Int,
            "No replicas: acks=all waits for the object store",
        ),
        fixed(
            "offsets.topic.replication.factor",
            "1",
            ConfigType::Short,
            "Committed offsets are kept in the metadata store, not a topic",
        ),
        fixed(
            "log.retention.ms",
            &DEFAULT_RETENTION_MS.to_string(),
            ConfigType::Long,
            "Kafscale keeps data until a topic's retention.ms says otherwise",
        ),
        fixed(
            "log.retention.bytes",
            &DEFAULT_RETENTION_BYTES.to_string(),
            ConfigType::Long,
            "Kafscale keeps data until a topic's retention.bytes says otherwise",
        ),
        fixed(
            "log.cleanup.policy",
            "delete",
            ConfigType::List,
            "The default of a topic's cleanup.policy",
        ),
        fixed(
            "log.message.timestamp.type",
            "CreateTime",
            ConfigType::String,
            "The default of a topic's message.timestamp.type",
        ),
        fixed(
            "unclean.leader.election.enable",
            "false",
            ConfigType::Boolean,
            "No replicas that could fall behind",
        ),
        ro(
            "broker.id",
            Some(cfg.broker_id.to_string()),
            ConfigType::Int,
            "KAFSCALE_BROKER_ID",
        ),
        ro(
            "advertised.listeners",
            Some(format!("PLAINTEXT://{}:{}", cluster.host, cluster.port)),
            ConfigType::List,
            "KAFSCALE_BROKER_HOST and KAFSCALE_BROKER_PORT",
        ),
        ro(
            "kafscale.s3.bucket",
            cfg.store.bucket.clone(),
            ConfigType::String,
            "KAFSCALE_S3_BUCKET",
        ),
        ro(
            "kafscale.s3.region",
            Some(cfg.store.region.clone()),
            ConfigType::String,
            "KAFSCALE_S3_REGION",
        ),
        ro(
            "kafscale.s3.endpoint",
            cfg.store.endpoint.clone(),
            ConfigType::String,
            "KAFSCALE_S3_ENDPOINT",
        ),
        ro(
            "kafscale.cache.bytes",
            Some(cfg.log.cache_bytes.to_string()),
            ConfigType::Long,
            "KAFSCALE_CACHE_BYTES",
        ),
        ro(
            "kafscale.readahead.segments",
            Some(cfg.log.readahead_segments.to_string()),
            ConfigType::Int,
            "KAFSCALE_READAHEAD_SEGMENTS",
        ),
        ro(
            "kafscale.segment.bytes",
            Some(cfg.log.segment_bytes.to_string()),
            ConfigType::Int,
            "KAFSCALE_SEGMENT_BYTES",
        ),
        ro(
            "kafscale.flush.interval.ms",
            Some(cfg.log.flush_interval.as_millis().to_string()),
            ConfigType::Long,
            "KAFSCALE_FLUSH_INTERVAL_MS",
        ),
    ]
}

/// Whether a broker resource name means this broker ("" is the cluster default,
/// which for read-only configs is the same thing).
fn is_this_broker(shard: &Shard, name: &str) -> bool {
    name.is_empty() || name.trim().parse::<i32>().ok() == Some(shard.settings.broker_id)
}

pub fn describe(
    shard: &Rc<Shard>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let cluster = shard.cluster();
    let docs = req.include_documentation && version >= 3;
    let mut resp = DescribeConfigsResponse::default();
    for r in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let entries = match r.resource_type {
            RESOURCE_TOPIC => match cluster.topic(&r.resource_name) {
                Some(t) => Ok(topic_entries(shard, &t.configs)),
                None => Err((
                    UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {} does not exist", &*r.resource_name),
                )),
            },
            RESOURCE_BROKER if is_this_broker(shard, &r.resource_name) => Ok(broker_entries(shard)),
            RESOURCE_BROKER => Err((
                INVALID_REQUEST,
                format!("broker {} is not this broker", &*r.resource_name),
            )),
            other => Err((
                INVALID_REQUEST,
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                // Keys outside the whitelist are ignored; a null key list means all
                // of them (an empty one, none: Kafka's protocol).
                let wanted = |name: &str| match &r.configuration_keys {
                    Some(keys) => keys.iter().any(|k| &**k == name),
                    None => true,
                };
                out.configs = entries
                    .into_iter()
                    .filter(|e| wanted(e.name))
                    .map(|e| encode_entry(e, req.include_synonyms, docs))
                    .collect();
            }
            Err((code, message)) => {
                out.error_code = code;
                out.error_message = Some(s(message));
            }
        }
        resp.results.push(out);
    }
    resp
}

/// A requested change of a topic's configs, validated on the connection's shard
/// and merged with the current configs on the metadata shard.
enum Change {
    /// AlterConfigs: the new complete set (unset keys revert to their defaults).
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: set (Some) or delete (None) single keys.
    Incremental(Vec<(String, Option<String>)>),
}

type Failure = (i16, String);

/// Checks the resource itself: only topics can be altered.
fn check_resource(ty: i8, name: &str) -> Result<(), Failure> {
    match ty {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err((
            INVALID_CONFIG,
            format!("broker {name} configs are read-only"),
        )),
        other => Err((
            INVALID_REQUEST,
            format!("resource type {other} is not supported"),
        )),
    }
}

async fn apply(
    shard: &Rc<Shard>,
    topic: String,
    change: Change,
    validate_only: bool,
) -> Result<(), Failure> {
    update_topic(shard, topic, validate_only, move |t| {
        let mut next = t.clone();
        match change {
            Change::Replace(configs) => next.configs = configs,
            Change::Incremental(ops) => {
                for (k, v) in ops {
                    match v {
                        Some(v) => {
                            next.configs.insert(k, v);
                        }
                        None => {
                            next.configs.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(next)
    })
    .await
}

fn failure_parts(r: Result<(), Failure>) -> (i16, Option<StrBytes>) {
    match r {
        Ok(()) => (NONE, None),
        Err((code, message)) => (code, Some(s(message))),
    }
}

pub async fn alter(
    shard: &Rc<Shard>,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let result = match check_resource(r.resource_type, &name) {
            Err(f) => Err(f),
            Ok(()) => {
                let mut configs = BTreeMap::new();
                let mut bad = None;
                for c in &r.configs {
                    let value = c.value.as_deref();
                    if let Err(e) = topic_config::check(&c.name, value) {
                        bad = Some((INVALID_CONFIG, e.to_string()));
                        break;
                    }
                    if let Some(v) = value {
                        configs.insert(c.name.to_string(), v.trim().to_string());
                    }
                }
                match bad {
                    Some(f) => Err(f),
                    None => apply(shard, name, Change::Replace(configs), req.validate_only).await,
                }
            }
        };
        let (code, message) = failure_parts(result);
        let mut out = AlterConfigsResourceResponse::default();
        out.error_code = code;
        out.error_message = message;
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name;
        resp.responses.push(out);
    }
    resp
}

pub async fn incremental_alter(
    shard: &Rc<Shard>,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for r in req.resources {
        let name = r.resource_name.to_string();
        let result = match check_resource(r.resource_type, &name) {
            Err(f) => Err(f),
            Ok(()) => {
                let mut ops = Vec::new();
                let mut bad = None;
                for c in &r.configs {
                    let value = c.value.as_deref();
                    let checked = match c.config_operation {
                        OP_SET => topic_config::check(&c.name, value)
                            .map(|()| Some(value.unwrap_or_default().trim().to_string()))
                            .map_err(|e| e.to_string()),
                        // Deleting an unknown key is as invalid as setting one.
                        OP_DELETE if topic_config::lookup(&c.name).is_some() => Ok(None),
                        OP_DELETE => Err(TopicConfigError::Unsupported {
                            name: c.name.to_string(),
                        }
                        .to_string()),
                        OP_APPEND | OP_SUBTRACT => {
                            list_change(shard, &name, &c.name, c.config_operation, value).map(Some)
                        }
                        op => Err(format!("operation {op} is not supported for {}", &*c.name)),
                    };
                    match checked {
                        Ok(v) => ops.push((c.name.to_string(), v)),
                        Err(e) => {
                            bad = Some((INVALID_CONFIG, e));
                            break;
                        }
                    }
                }
                match bad {
                    Some(f) => Err(f),
                    None => apply(shard, name, Change::Incremental(ops), req.validate_only).await,
                }
            }
        };
        let (code, message) = failure_parts(result);
        let mut out = IncrementalResult::default();
        out.error_code = code;
        out.error_message = message;
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name;
        resp.responses.push(out);
    }
    resp
}
