//! Fetch, in two rounds. First every owning shard reads what is there now. If
//! that is less than `min_bytes` and the client allows waiting, every owning
//! shard waits for its partitions' high watermarks to move (a notification, not
//! a poll) until the deadline, and the response is built from the first shard
//! that has data plus the first round's answers for the rest.
//! The response-level `max_bytes` is applied in request order; the first
//! partition with data is always included whole (KIP-74).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use kafscale_codec::legacy;

use crate::errors::{
    legacy_error, NONE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION,
};
use crate::partition;
use crate::placement::partition_shard;
use crate::router::fan_out;
use crate::shard::Shard;

#[derive(Clone)]
struct Part {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// The leader epoch the client believes current (-1: not sent).
    epoch: i32,
    /// Fetch v0-3: the message format (magic 0 or 1) the client reads.
    legacy_magic: Option<u8>,
}

#[derive(Clone)]
struct PartResult {
    error: i16,
    high_watermark: i64,
    log_start: i64,
    records: Option<Bytes>,
}

impl PartResult {
    fn err(error: i16) -> Self {
        PartResult {
            error,
            high_watermark: -1,
            log_start: -1,
            records: None,
        }
    }
    fn bytes(&self) -> usize {
        self.records.as_ref().map_or(0, |r| r.len())
    }
}

/// Fetch v4 is the first version that reads v2 batches; v2-3 read magic 1
/// message sets, v0-1 magic 0.
fn legacy_magic(version: i16) -> Option<u8> {
    match version {
        ..=1 => Some(0),
        2..=3 => Some(1),
        _ => None,
    }
}

pub async fn handle(shard: &Rc<Shard>, req: FetchRequest, version: i16) -> FetchResponse {
    let cluster = shard.cluster();
    let legacy_magic = legacy_magic(version);
    // (topic name, topic id, partition indexes, resolved?) per requested topic.
    let mut shape: Vec<(Option<Arc<str>>, Uuid, Vec<i32>)> = Vec::with_capacity(req.topics.len());
    let mut parts: Vec<Part> = Vec::new();
    for t in &req.topics {
        let name: Option<Arc<str>> = if version >= 13 {
            cluster
                .by_id
                .get(&t.topic_id)
                .map(|m| Arc::from(m.name.as_str()))
        } else {
            Some(Arc::from(t.topic.0.as_str()))
        };
        shape.push((
            name.clone(),
            t.topic_id,
            t.partitions.iter().map(|p| p.partition).collect(),
        ));
        if let Some(name) = name {
            for p in &t.partitions {
                parts.push(Part {
                    topic: name.clone(),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    epoch: p.current_leader_epoch,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    legacy_magic,
                });
            }
        }
    }

    let count = shard.count;
    let owner = move |p: &Part| partition_shard(&p.topic, p.partition, count);
    let n = parts.len();
    let mut results: Vec<Option<PartResult>> = (0..n).map(|_| None).collect();
    let lost = || PartResult::err(NOT_LEADER_OR_FOLLOWER);
    let mut first: FuturesUnordered<_> = fan_out(shard, parts.clone(), owner, move |sh, items| {
        read_local(sh, items, None)
    })
    .into_iter()
    .collect();
    while let Some(answer) = first.next().await {
        answer.place(&mut results, lost);
    }
    let mut results: Vec<PartResult> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(lost))
        .collect();
    let total: usize = results.iter().map(PartResult::bytes).sum();
    let any_error = results.iter().any(|r| r.error != NONE);
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    if total < req.min_bytes.max(1) as usize && !any_error && !wait.is_zero() && n > 0 {
        let deadline = shard.clock().now() + wait;
        let mut second: FuturesUnordered<_> = fan_out(shard, parts, owner, move |sh, items| {
            read_local(sh, items, Some(deadline))
        })
        .into_iter()
        .collect();
        while let Some(answer) = second.next().await {
            let Ok(rs) = answer.results else { continue };
            let has_data = rs.iter().any(|x| x.bytes() > 0 || x.error != NONE);
            for (i, res) in answer.positions.into_iter().zip(rs) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = res;
                }
            }
            if has_data {
                // The other shards' waits end on their own at the deadline.
                break;
            }
        }
    }

    // Response-level byte budget, in request order.
    let mut budget = req.max_bytes.max(0) as usize;
    let mut first_with_data = true;
    for r in results.iter_mut() {
        let n = r.bytes();
        if n == 0 {
            continue;
        }
        if first_with_data || n <= budget {
            budget = budget.saturating_sub(n);
            first_with_data = false;
        } else {
            r.records = None;
        }
    }

    let mut resp = FetchResponse::default();
    let mut it = results.into_iter();
    for (name, topic_id, indexes) in shape {
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_string(
            name.as_deref().unwrap_or("").to_string(),
        ));
        t.topic_id = topic_id;
        for index in indexes {
            let r = match name {
                Some(_) => it
                    .next()
                    .unwrap_or(PartResult::err(UNKNOWN_TOPIC_OR_PARTITION)),
                None => PartResult::err(UNKNOWN_TOPIC_ID),
            };
            if let (Some(topic), Some(records)) = (&name, &r.records) {
                shard.metrics.add_fetch_bytes(topic, records.len() as u64);
            }
            let mut p = PartitionData::default();
            p.partition_index = index;
            p.error_code = r.error;
            p.high_watermark = r.high_watermark;
            p.last_stable_offset = r.high_watermark;
            p.log_start_offset = r.log_start;
            p.preferred_read_replica = BrokerId(-1);
            p.aborted_transactions = (req.isolation_level == 1).then(Vec::new);
            p.records = Some(r.records.unwrap_or_default());
            t.partitions.push(p);
        }
        resp.responses.push(t);
    }
    resp
}

/// Runs on the owning shard: optionally waits until one of `parts` has data (or
/// the deadline passes), then reads them all.
async fn read_local(sh: Rc<Shard>, parts: Vec<Part>, deadline: Option<Instant>) -> Vec<PartResult> {
    let mut loaded = Vec::with_capacity(parts.len());
    for part in &parts {
        loaded.push(
            partition::partition(&sh.logs, &part.topic, part.partition)
                .await
                .and_then(|p| p.check_epoch(part.epoch).map(|()| p)),
        );
    }
    if let Some(deadline) = deadline {
        let mut waits = Vec::new();
        let mut ready = false;
        for (part, p) in parts.iter().zip(&loaded) {
            match p {
                Ok(p) => match partition::wait_for_data(p, part.offset) {
                    Some(rx) => waits.push(rx),
                    None => ready = true,
                },
                Err(_) => ready = true,
            }
        }
        if !ready && !waits.is_empty() {
            let timer = sh.clock().sleep_until(deadline);
            futures::pin_mut!(timer);
            let _ = futures::future::select(futures::future::select_all(waits), timer).await;
        }
    }
    let mut out = Vec::with_capacity(parts.len());
    for (part, p) in parts.into_iter().zip(loaded) {
        let r = match p {
            Err(e) => PartResult::err(e.code()),
            Ok(p) => match partition::read(&sh.logs, &p, part.offset, part.max_bytes).await {
                Ok(o) => {
                    let mut r = PartResult {
                        error: NONE,
                        high_watermark: o.offsets.high_watermark,
                        log_start: o.offsets.log_start,
                        records: o.records,
                    };
                    if let (Some(magic), Some(stored)) = (part.legacy_magic, &r.records) {
                        let limit = sh.settings.max_request_bytes;
                        match legacy::from_v2(stored, magic, part.offset, limit) {
                            Ok(set) => r.records = Some(Bytes::from(set)),
                            Err(e) => {
                                // The client hears it (zstd: UNSUPPORTED_COMPRESSION_TYPE)
                                // and asks again at every poll: not a warning each time.
                                tracing::debug!(topic = %part.topic, partition = part.partition, error = %e,
                                    "stored batches not convertible for an old fetcher");
                                r.error = legacy_error(&e);
                                r.records = None;
                            }
                        }
                    }
                    r
                }
                Err(code) => {
                    let o = p.offsets();
                    PartResult {
                        error: code.code(),
                        high_watermark: o.high_watermark,
                        log_start: o.log_start,
                        records: None,
                    }
                }
            },
        };
        out.push(r);
    }
    out
}
