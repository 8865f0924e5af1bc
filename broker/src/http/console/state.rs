//! What the console shows, gathered from the shards the way `/metrics` is: one
//! job on the metadata shard, which asks every shard for its part with `on_all`.
//! A shard answers with plain `Send` data (its partitions, its groups, its
//! counters); the joining (lag = high watermark − committed offset) happens here,
//! on the I/O runtime, never on a shard.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use serde::Serialize;

use super::rates::{Counters, Rates};
use crate::http::{Endpoint, ProbeError, ShardsError};
use crate::placement::partition_shard;
use crate::shard::Shard;

/// The object store's health as the console reports it. A plain value, so that
/// whatever judges health (today: the readiness probe) hands it in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreHealth {
    /// `healthy`, `degraded`, `unavailable`, or `unknown` (not probed yet).
    pub state: &'static str,
    /// Why it is not healthy, when known.
    pub detail: Option<String>,
    /// Error rate and average latency over the health window.
    pub error_rate: f64,
    pub latency_avg_ms: f64,
}

impl StoreHealth {
    /// From the last readiness probe (`None`: no probe has finished yet) and the
    /// rating of the store's requests: an unreachable store is unavailable whatever
    /// the rating says; otherwise the rating (healthy, degraded, unavailable) holds.
    pub fn new(
        probe: Option<Result<(), ProbeError>>,
        rating: &kafscale_segstore::health::HealthSnapshot,
    ) -> Self {
        let (state, detail) = match probe {
            Some(Err(e)) => ("unavailable", Some(e.to_string())),
            None => ("unknown", Some("not probed yet".into())),
            Some(Ok(())) => (
                rating.state.name(),
                (!rating.reason.is_empty()).then(|| rating.reason.clone()),
            ),
        };
        StoreHealth {
            state,
            detail,
            error_rate: rating.error_rate,
            latency_avg_ms: rating.latency_avg_ms,
        }
    }
}

/// The whole console state, serialised as `/ui/api/state` and each SSE event.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// Wall-clock time of the gathering, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub broker: BrokerView,
    pub store: StoreView,
    /// `None` until two samples exist to take a difference of.
    pub rates: Option<Rates>,
    pub shards: Vec<ShardView>,
    pub topics: Vec<TopicView>,
    pub groups: Vec<GroupView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerView {
    pub id: i32,
    pub cluster_id: String,
    /// The advertised Kafka address (what clients connect to).
    pub address: String,
    pub shards: usize,
    pub uptime_sec: u64,
    pub open_connections: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub health: StoreHealth,
    pub operations: Vec<StoreOp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreOp {
    pub operation: &'static str,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardView {
    pub shard: usize,
    pub partitions: usize,
    pub groups: usize,
    pub unflushed_bytes: u64,
    pub upload_queue: u64,
    pub uploads_in_flight: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    pub name: String,
    pub id: String,
    pub produce_bytes_total: u64,
    pub fetch_bytes_total: u64,
    pub partitions: Vec<PartitionView>,
}

/// One partition. The offsets are `None` while the partition is not loaded on its
/// shard (no client has touched it since start; the console starts loading it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionView {
    pub partition: i32,
    pub shard: usize,
    pub loaded: bool,
    pub log_start: Option<i64>,
    pub high_watermark: Option<i64>,
    /// The next offset to assign; above the high watermark while data is unflushed.
    pub next_offset: Option<i64>,
    pub segments: Option<usize>,
    /// Bytes of the partition's durable `.kfs` objects.
    pub store_bytes: Option<u64>,
    /// Appended but not yet durable (active buffer and sealed segments in upload).
    pub unflushed_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<MemberView>,
    pub offsets: Vec<OffsetView>,
    /// Sum of the known per-partition lags.
    pub total_lag: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Decoded for the `consumer` protocol type; `None` for other protocol types
    /// or an assignment that does not decode (see `assignment_bytes`).
    pub assignment: Option<Vec<AssignedTopic>>,
    pub assignment_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssignedTopic {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// A partition the group committed an offset for or has assigned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffsetView {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub high_watermark: Option<i64>,
    /// `high_watermark − committed`, when both are known.
    pub lag: Option<i64>,
}

/// A loaded partition as its shard reports it.
#[derive(Debug, Clone)]
struct LoadedPartition {
    log_start: i64,
    high_watermark: i64,
    next_offset: i64,
    segments: usize,
    store_bytes: u64,
    unflushed_bytes: u64,
}

/// A group as its owner shard reports it (before lag is known).
#[derive(Debug, Clone)]
struct RawGroup {
    id: String,
    state: &'static str,
    protocol_type: String,
    protocol: String,
    generation: i32,
    leader: Option<String>,
    members: Vec<MemberView>,
    committed: Vec<(String, i32, i64)>,
}

/// One shard's answer.
struct ShardPart {
    view: ShardView,
    partitions: Vec<((String, i32), LoadedPartition)>,
    groups: Vec<RawGroup>,
    counters: Counters,
}

/// The metadata shard's view of the cluster, plus every shard's part.
struct Parts {
    cluster: Arc<crate::metadata::Cluster>,
    shards: Vec<ShardPart>,
}

/// Decodes a `consumer` protocol assignment: an i16 version, then the message.
/// Versions above the newest known one are read as the newest, as Kafka's
/// `ConsumerProtocol` does (new versions only append fields).
fn decode_assignment(raw: &[u8]) -> Option<Vec<AssignedTopic>> {
    if raw.is_empty() {
        // A member that has joined but not yet synced has no assignment.
        return Some(Vec::new());
    }
    let mut buf = bytes::Bytes::copy_from_slice(raw);
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    let a = ConsumerProtocolAssignment::decode(&mut buf, version.min(3)).ok()?;
    let mut out: Vec<AssignedTopic> = a
        .assigned_partitions
        .into_iter()
        .map(|t| {
            let mut partitions = t.partitions;
            partitions.sort_unstable();
            AssignedTopic {
                topic: t.topic.0.to_string(),
                partitions,
            }
        })
        .collect();
    out.sort_by(|x, y| x.topic.cmp(&y.topic));
    Some(out)
}

/// What one shard reports; runs on that shard.
fn shard_part(sh: &Rc<Shard>) -> ShardPart {
    // Partitions of this shard that no client has touched since start are not
    // loaded; start loading them (a LIST and a footer read, once, as a
    // ListOffsets would) so that the next gathering shows their offsets.
    let cluster = sh.cluster();
    let missing: Vec<(String, i32)> = {
        cluster
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
            .filter(|(t, p)| partition_shard(t, *p, sh.count) == sh.id)
            .filter(|(t, p)| sh.logs.open_partition(t, *p).is_none())
            .collect()
    };
    for (t, p) in missing {
        let sh = sh.clone();
        crate::runtime::spawn_detached(async move {
            // A failure is logged by recovery and retried at the next gathering.
            let _ = crate::partition::partition(&sh.logs, &t, p).await;
        });
    }

    let mut partitions = Vec::new();
    for p in sh.logs.open_partitions() {
        if !p.loaded() {
            continue;
        }
        let s = p.status();
        partitions.push((
            (p.topic.to_string(), p.index),
            LoadedPartition {
                log_start: s.log_start,
                high_watermark: s.high_watermark,
                next_offset: s.log_end,
                segments: s.segments,
                store_bytes: s.store_bytes,
                unflushed_bytes: s.unflushed_bytes as u64,
            },
        ));
    }

    let groups: Vec<RawGroup> = sh
        .groups
        .all()
        .into_iter()
        .filter(|slot| slot.exists())
        .map(|slot| {
            let g = slot.group.borrow();
            let protocol_type = g.protocol_type.clone().unwrap_or_default();
            let mut members: Vec<MemberView> = g
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.client_host.clone(),
                    assignment: if protocol_type == "consumer" {
                        decode_assignment(&m.assignment)
                    } else {
                        None
                    },
                    assignment_bytes: m.assignment.len(),
                })
                .collect();
            members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
            RawGroup {
                id: slot.id.clone(),
                state: g.state.name(),
                protocol_type,
                protocol: g.protocol.clone().unwrap_or_default(),
                generation: g.generation,
                leader: g.leader.clone(),
                members,
                committed: slot
                    .offsets
                    .borrow()
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, o.offset))
                    .collect(),
            }
        })
        .collect();

    let snap = sh.metrics_snapshot();
    let gauges = snap.shards.first().copied().unwrap_or_default();
    ShardPart {
        view: ShardView {
            shard: sh.id,
            partitions: partitions.len(),
            groups: groups.len(),
            unflushed_bytes: gauges.buffered_bytes,
            upload_queue: gauges.upload_queue,
            uploads_in_flight: gauges.uploads_in_flight,
        },
        partitions,
        groups,
        counters: Counters::from_snapshot(&snap),
    }
}

async fn collect(ep: &Endpoint) -> Result<Parts, ShardsError> {
    ep.on_shards(|sh: Rc<Shard>| async move {
        let cluster = sh.cluster();
        let answers = sh.on_all(|s| async move { shard_part(&s) }).await;
        let mut shards = Vec::with_capacity(answers.len());
        let mut missing = Vec::new();
        for (i, a) in answers.into_iter().enumerate() {
            match a {
                Ok(p) => shards.push(p),
                Err(_) => missing.push(i),
            }
        }
        if missing.is_empty() {
            Ok(Parts { cluster, shards })
        } else {
            Err(ShardsError::Missing(missing))
        }
    })
    .await?
}

/// Gathers the console state. `health` is the object store's health as the
/// caller knows it; `rates` turns the counters into per-second rates.
pub async fn gather(
    ep: &Endpoint,
    health: StoreHealth,
    rates: &super::rates::Tracker,
    uptime: Duration,
) -> Result<State, ShardsError> {
    let parts = collect(ep).await?;
    let store_ops: Vec<StoreOp> = ep
        .stats
        .snapshot()
        .into_iter()
        .map(|o| StoreOp {
            operation: o.operation,
            requests: o.requests,
            errors: o.errors,
        })
        .collect();
    let mut counters = Counters::default();
    let mut loaded: HashMap<(String, i32), LoadedPartition> = HashMap::new();
    let mut raw_groups = Vec::new();
    let mut shards = Vec::new();
    for p in parts.shards {
        counters.merge(p.counters);
        loaded.extend(p.partitions);
        raw_groups.extend(p.groups);
        shards.push(p.view);
    }
    counters.store = store_ops
        .iter()
        .map(|o| (o.operation, o.requests, o.errors))
        .collect();
    shards.sort_by_key(|s| s.shard);
    let cluster = parts.cluster;

    let mut topics: Vec<TopicView> = cluster
        .topics
        .values()
        .map(|t| TopicView {
            name: t.name.clone(),
            id: t.id.to_string(),
            produce_bytes_total: counters.produce_bytes.get(&t.name).copied().unwrap_or(0),
            fetch_bytes_total: counters.fetch_bytes.get(&t.name).copied().unwrap_or(0),
            partitions: (0..t.partitions)
                .map(|p| {
                    let shard = partition_shard(&t.name, p, shards.len());
                    match loaded.get(&(t.name.clone(), p)) {
                        Some(l) => PartitionView {
                            partition: p,
                            shard,
                            loaded: true,
                            log_start: Some(l.log_start),
                            high_watermark: Some(l.high_watermark),
                            next_offset: Some(l.next_offset),
                            segments: Some(l.segments),
                            store_bytes: Some(l.store_bytes),
                            unflushed_bytes: Some(l.unflushed_bytes),
                        },
                        None => PartitionView {
                            partition: p,
                            shard,
                            loaded: false,
                            log_start: None,
                            high_watermark: None,
                            next_offset: None,
                            segments: None,
                            store_bytes: None,
                            unflushed_bytes: None,
                        },
                    }
                })
                .collect(),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));

    let hw = |t: &str, p: i32| loaded.get(&(t.to_string(), p)).map(|l| l.high_watermark);
    let mut groups: Vec<GroupView> = raw_groups.into_iter().map(|g| group_view(g, &hw)).collect();
    groups.sort_by(|a, b| a.id.cmp(&b.id));

    // Real time, like everything on the HTTP side: when this view was taken.
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let open_connections = counters.open_connections;
    let rates = rates.sample(counters);
    Ok(State {
        at_ms,
        broker: BrokerView {
            id: cluster.broker_id,
            cluster_id: cluster.cluster_id.clone(),
            address: format!("{}:{}", cluster.host, cluster.port),
            shards: shards.len(),
            uptime_sec: uptime.as_secs(),
            open_connections,
        },
        store: StoreView {
            health,
            operations: store_ops,
        },
        rates,
        shards,
        topics,
        groups,
    })
}

/// Joins a group's committed offsets and assignment with the high watermarks.
fn group_view(g: RawGroup, hw: &dyn Fn(&str, i32) -> Option<i64>) -> GroupView {
    let mut offsets: BTreeMap<(String, i32), Option<i64>> = g
        .committed
        .iter()
        .map(|(t, p, o)| ((t.clone(), *p), Some(*o)))
        .collect();
    // Assigned partitions without a commit yet: lag unknown, but worth listing.
    for m in &g.members {
        for a in m.assignment.iter().flatten() {
            for p in &a.partitions {
                offsets.entry((a.topic.clone(), *p)).or_insert(None);
            }
        }
    }
    let offsets: Vec<OffsetView> = offsets
        .into_iter()
        .map(|((topic, partition), committed)| {
            let high_watermark = hw(&topic, partition);
            let lag = match (high_watermark, committed) {
                // A commit ahead of the end (allowed by Kafka) is no lag, not a negative one.
                (Some(h), Some(c)) => Some((h - c).max(0)),
                _ => None,
            };
            OffsetView {
                topic,
                partition,
                committed,
                high_watermark,
                lag,
            }
        })
        .collect();
    GroupView {
        total_lag: offsets.iter().filter_map(|o| o.lag).sum(),
        id: g.id,
        state: g.state,
        protocol_type: g.protocol_type,
        protocol: g.protocol,
        generation: g.generation,
        leader: g.leader,
        members: g.members,
        offsets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn a_failed_probe_makes_the_store_unavailable_with_its_text() {
        let rating = kafscale_segstore::health::HealthSnapshot {
            state: kafscale_segstore::HealthState::Healthy,
            reason: String::new(),
            requests: 0,
            error_rate: 0.0,
            latency_avg_ms: 0.0,
            state_duration: Duration::ZERO,
        };
        let probe = Err(ProbeError::Timeout(Duration::from_secs(2)));
        let h = StoreHealth::new(Some(probe), &rating);
        assert_eq!(
            (h.state, h.detail.as_deref()),
            ("unavailable", Some("no answer within 2000 ms"))
        );
        let h = StoreHealth::new(None, &rating);
        assert_eq!(
            (h.state, h.detail.as_deref()),
            ("unknown", Some("not probed yet"))
        );
        assert_eq!(StoreHealth::new(Some(Ok(())), &rating).detail, None);
    }

    fn encoded(version: i16, parts: &[(&str, &[i32])]) -> Vec<u8> {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
            parts
                .iter()
                .map(|(t, ps)| {
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        );
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&version.to_be_bytes());
        a.encode(&mut out, version.min(3)).unwrap();
        out.to_vec()
    }

    #[test]
    fn assignments_decode_sorted() {
        let raw = encoded(1, &[("b", &[2, 0]), ("a", &[1])]);
        assert_eq!(
            decode_assignment(&raw),
            Some(vec![
                AssignedTopic {
                    topic: "a".into(),
                    partitions: vec![1]
                },
                AssignedTopic {
                    topic: "b".into(),
                    partitions: vec![0, 2]
                },
            ])
        );
        // A newer version than we know is read as the newest one.
        assert_eq!(
            decode_assignment(&encoded(7, &[("a", &[0])])).map(|v| v.len()),
            Some(1)
        );
        assert_eq!(decode_assignment(&[]), Some(vec![]));
        assert_eq!(decode_assignment(&[0]), None);
        assert_eq!(decode_assignment(&[0, 0, 0, 0, 0, 9]), None);
        assert_eq!(decode_assignment(&[0xff, 0xff]), None);
    }

    #[test]
    fn lag_joins_commits_with_high_watermarks() {
        let member = |parts: Vec<i32>| MemberView {
            member_id: "m".into(),
            instance_id: None,
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            assignment: Some(vec![AssignedTopic {
                topic: "t".into(),
                partitions: parts,
            }]),
            assignment_bytes: 10,
        };
        let g = RawGroup {
            id: "g".into(),
            state: "Stable",
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            generation: 3,
            leader: Some("m".into()),
            members: vec![member(vec![0, 1, 2])],
            committed: vec![
                ("t".into(), 0, 4),
                ("t".into(), 1, 12),
                ("gone".into(), 0, 5),
            ],
        };
        let hw = |t: &str, p: i32| match (t, p) {
            ("t", 0) => Some(10),
            ("t", 1) => Some(11),
            ("t", 2) => Some(3),
            _ => None,
        };
        let v = group_view(g, &hw);
        let rows: Vec<_> = v
            .offsets
            .iter()
            .map(|o| (o.topic.as_str(), o.partition, o.committed, o.lag))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("gone", 0, Some(5), None),
                ("t", 0, Some(4), Some(6)),
                ("t", 1, Some(12), Some(0)),
                ("t", 2, None, None),
            ]
        );
        assert_eq!(v.total_lag, 6);
    }
}
