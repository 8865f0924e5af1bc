//! Produce: batches go to the owning shards, which append them; `acks=-1`
//! answers wait until the owning shard has made the batches durable. While the
//! object store is unavailable, produce requests are refused with the retriable
//! KAFKA_STORAGE_ERROR.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use kafscale_segstore::HealthState;

use kafscale_codec::legacy;

use crate::errors::{
    code_of, legacy_error, KafkaError, INVALID_RECORD, INVALID_REQUIRED_ACKS, KAFKA_STORAGE_ERROR,
    MESSAGE_TOO_LARGE, NONE, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, UNKNOWN_TOPIC_OR_PARTITION,
};
use crate::metadata::valid_topic_name;
use crate::partition::{self, Ticket};
use crate::placement::partition_shard;
use crate::router::scatter;
use crate::shard::Shard;

struct Part {
    topic: Arc<str>,
    partition: i32,
    records: Option<Bytes>,
    /// Why the records were refused before reaching their owner (a message
    /// set of magic 0/1 that does not convert).
    refused: Option<i16>,
}

#[derive(Clone, Copy)]
struct PartResult {
    error: i16,
    base_offset: i64,
    log_start: i64,
}

impl PartResult {
    fn err(error: i16) -> Self {
        PartResult {
            error,
            base_offset: -1,
            log_start: -1,
        }
    }
}

/// `turn`: this request's place among the connection's produce requests (see
/// `connection.rs`). It is held until the request's partitions have been handed
/// to their owning shards, so that requests of one connection reach each owner
/// in the order they were sent, whatever this one waited for before (creating
/// topics). The owners keep that order up to the append (`partition::Order`).
pub async fn handle(
    shard: &Rc<Shard>,
    req: ProduceRequest,
    version: i16,
    turn: Option<Ticket>,
) -> ProduceResponse {
    if let Some(t) = &turn {
        t.turn().await;
    }
    let acks = req.acks;
    if shard.settings.auto_create_topics {
        let cluster = shard.cluster();
        let missing: Vec<String> = req
            .topic_data
            .iter()
            .map(|t| t.name.0.to_string())
            .filter(|n| cluster.topic(n).is_none() && valid_topic_name(n))
            .collect();
        if !missing.is_empty() {
            super::topics::auto_create(shard, missing).await;
        }
    }
    // The snapshot this shard answers from: an owning shard that has not yet
    // installed it waits for it rather than deny a topic the client was shown.
    let revision = shard.cluster().revision;
    let mut parts = Vec::new();
    let mut shape = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let topic: Arc<str> = Arc::from(t.name.0.as_str());
        shape.push((
            t.name,
            t.partition_data.iter().map(|p| p.index).collect::<Vec<_>>(),
        ));
        for p in t.partition_data {
            let (records, refused) = if version < FIRST_V2_ONLY {
                upconvert(p.records, shard.settings.max_request_bytes)
            } else {
                (p.records, None)
            };
            parts.push(Part {
                topic: topic.clone(),
                partition: p.index,
                records,
                refused,
            });
        }
    }
    let timeout = Duration::from_millis(req.timeout_ms.clamp(1000, 300_000) as u64);
    let deadline = shard.clock().now() + timeout;
    let count = shard.count;
    let results = if !(-1..=1).contains(&acks) {
        parts
            .iter()
            .map(|_| PartResult::err(INVALID_REQUIRED_ACKS))
            .collect()
    } else if shard.store_health() == HealthState::Unavailable {
        // The store is failing (sustained upload failures, or it does not answer):
        // refuse instead of buffering what cannot be made durable. Clients retry
        // KAFKA_STORAGE_ERROR (see docs/operations.md), and the first successful
        // upload retry or probe lifts this.
        parts
            .iter()
            .map(|_| PartResult::err(KAFKA_STORAGE_ERROR))
            .collect()
    } else {
        let pending = scatter(
            shard,
            parts,
            |p| partition_shard(&p.topic, p.partition, count),
            || PartResult::err(NOT_LEADER_OR_FOLLOWER),
            move |sh, parts| produce_local(sh, parts, acks, deadline, revision),
        );
        // Handed over: the connection's next produce request may go.
        drop(turn);
        pending.await
    };
    let mut resp = ProduceResponse::default();
    let mut it = results.into_iter();
    for (name, indexes) in shape {
        let mut t = TopicProduceResponse::default();
        t.name = name;
        for index in indexes {
            let r = it
                .next()
                .unwrap_or(PartResult::err(UNKNOWN_TOPIC_OR_PARTITION));
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            p.error_code = r.error;
            p.base_offset = r.base_offset;
            p.log_append_time_ms = -1;
            p.log_start_offset = r.log_start;
            t.partition_responses.push(p);
        }
        resp.responses.push(t);
    }
    resp
}

/// Runs on the owning shard. Takes every part's append ticket before returning
/// the future, i.e. in the order the parts arrived (see `Shard::on`); the parts
/// then proceed concurrently, each appending when its partition's turn comes.
fn produce_local(
    sh: Rc<Shard>,
    parts: Vec<Part>,
    acks: i16,
    deadline: Instant,
    revision: i64,
) -> impl Future<Output = Vec<PartResult>> {
    let tickets: Vec<Ticket> = parts
        .iter()
        .map(|p| sh.logs.appends().ticket(&p.topic, p.partition))
        .collect();
    async move {
        let appended = futures::future::join_all(
            parts
                .into_iter()
                .zip(tickets)
                .map(|(part, ticket)| append_part(&sh, part, ticket, acks, deadline, revision)),
        )
        .await;
        let mut results = Vec::with_capacity(appended.len());
        let mut waits = Vec::new();
        for (i, (r, durable)) in appended.into_iter().enumerate() {
            results.push(r);
            if let Some(rx) = durable {
                waits.push((i, rx));
            }
        }
        if !waits.is_empty() {
            // One timer for the whole request, not one per partition; partitions not
            // durable by the deadline answer REQUEST_TIMED_OUT.
            let mut settled = vec![false; results.len()];
            let waited: Vec<usize> = waits.iter().map(|(i, _)| *i).collect();
            let mut pending: FuturesUnordered<_> = waits
                .into_iter()
                .map(|(i, rx)| async move { (i, rx.await) })
                .collect();
            let timer = sh.clock().sleep_until(deadline);
            futures::pin_mut!(timer);
            while let Either::Left((Some((i, r)), _)) =
                futures::future::select(pending.next(), &mut timer).await
            {
                if let Some(s) = settled.get_mut(i) {
                    *s = true;
                }
                let code = match r {
                    Ok(r) => code_of(&r),
                    Err(_) => NOT_LEADER_OR_FOLLOWER,
                };
                if code != NONE {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = PartResult::err(code);
                    }
                }
            }
            for i in waited {
                if !settled.get(i).copied().unwrap_or(true) {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = PartResult::err(REQUEST_TIMED_OUT);
                    }
                }
            }
        }
        results
    }
}

/// Resolves when an `acks=-1` batch is durable, or with why it never will be.
type Durable = oneshot::Receiver<Result<(), KafkaError>>;

/// One partition's batches: find the partition (waiting for the snapshot the
/// client was answered from, and for the load), wait for the turn, wait for
/// buffer room, append. Holds `ticket` until appended or given up.
async fn append_part(
    sh: &Rc<Shard>,
    part: Part,
    ticket: Ticket,
    acks: i16,
    deadline: Instant,
    revision: i64,
) -> (PartResult, Option<Durable>) {
    if sh.is_shutting_down() {
        return (PartResult::err(NOT_LEADER_OR_FOLLOWER), None);
    }
    if let Some(code) = part.refused {
        return (PartResult::err(code), None);
    }
    let Some(records) = part.records else {
        return (PartResult::err(INVALID_RECORD), None);
    };
    let p = match partition::entry(&sh.logs, &part.topic, part.partition) {
        Ok(p) => p,
        Err(code) => {
            if !(sh.cluster().revision < revision && sh.wait_revision(revision, deadline).await) {
                return (PartResult::err(code.code()), None);
            }
            match partition::entry(&sh.logs, &part.topic, part.partition) {
                Ok(p) => p,
                Err(e) => return (PartResult::err(e.code()), None),
            }
        }
    };
    // The topic's max.message.bytes, else the broker's message.max.bytes.
    let max_message_bytes = p
        .settings
        .get()
        .max_message_bytes
        .unwrap_or(sh.settings.max_message_bytes);
    if has_batch_larger_than(&records, max_message_bytes) {
        return (PartResult::err(MESSAGE_TOO_LARGE), None);
    }
    if let Err(e) = partition::ready(&sh.logs, &p, deadline).await {
        return (PartResult::err(e.code()), None);
    }
    if !ticket.is_turn() {
        // Only a part that must wait arms a timer: the common case appends at once.
        let turn = ticket.turn();
        let timer = sh.clock().sleep_until(deadline);
        futures::pin_mut!(turn, timer);
        if let Either::Right(_) = futures::future::select(turn, timer).await {
            return (PartResult::err(REQUEST_TIMED_OUT), None);
        }
    }
    if !sh.logs.reserve_space(records.len(), deadline).await {
        return (PartResult::err(REQUEST_TIMED_OUT), None);
    }
    let r = match partition::append(&sh.logs, &p, &records, acks) {
        Ok(o) => {
            sh.metrics
                .add_produce_bytes(&part.topic, records.len() as u64);
            (
                PartResult {
                    error: NONE,
                    base_offset: o.base_offset,
                    log_start: o.log_start,
                },
                o.durable,
            )
        }
        Err(e) => (PartResult::err(e.code()), None),
    };
    drop(ticket);
    r
}

/// Produce v3 is the first version that may carry only v2 batches; older ones
/// carry message sets of magic 0/1 (or v2 batches, which pass as they are).
const FIRST_V2_ONLY: i16 = 3;

/// A message set of magic 0/1 as the one v2 batch the log stores
/// (`kafscale_codec::legacy`), or why it cannot be. `limit` bounds what its
/// compressed messages may expand to.
fn upconvert(records: Option<Bytes>, limit: usize) -> (Option<Bytes>, Option<i16>) {
    match records {
        Some(r) if legacy::is_legacy(&r) => match legacy::to_v2(&r, limit) {
            Ok(batch) => (Some(Bytes::from(batch)), None),
            Err(e) => {
                tracing::debug!(error = %e, "message set refused");
                (None, Some(legacy_error(&e)))
            }
        },
        other => (other, None),
    }
}

/// Whether a batch in `records` is larger than `max` bytes (Kafka's
/// message.max.bytes: the limit is on a batch, not on the request). Only records
/// larger than the limit are walked; malformed ones are left to the append,
/// which answers them with their own error.
fn has_batch_larger_than(records: &[u8], max: usize) -> bool {
    records.len() > max
        && kafscale_codec::batch::Batches::new(records)
            .map_while(Result::ok)
            .any(|(_, range)| range.len() > max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::build_batch;

    #[test]
    fn batches_above_the_limit_are_found() {
        let small = build_batch(0, 1, &[b"x"]);
        let big = build_batch(0, 1, &[&[7u8; 5000][..]]);
        let mut both = small.to_vec();
        both.extend_from_slice(&big);
        assert!(!has_batch_larger_than(&small, 1000));
        assert!(!has_batch_larger_than(&both, 6000));
        assert!(has_batch_larger_than(&both, 1000));
        assert!(!has_batch_larger_than(&small, small.len()));
    }

    #[test]
    fn old_message_sets_are_converted_and_bad_ones_refused() {
        // A v2 batch passes as it is (Produce v0-2 may carry one).
        let v2 = Bytes::from(build_batch(0, 1, &[b"x"]));
        assert_eq!(upconvert(Some(v2.clone()), 1 << 20), (Some(v2), None));
        // One magic 1 message: offset, size, crc, magic, attributes, timestamp, key, value.
        let mut m = vec![1u8, 0];
        m.extend_from_slice(&7i64.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.extend_from_slice(&1i32.to_be_bytes());
        m.push(b'v');
        let mut crc = crc32_ieee(&m).to_be_bytes().to_vec();
        crc.extend_from_slice(&m);
        let mut set = 0i64.to_be_bytes().to_vec();
        set.extend_from_slice(&(crc.len() as i32).to_be_bytes());
        set.extend_from_slice(&crc);
        let (batch, refused) = upconvert(Some(Bytes::from(set.clone())), 1 << 20);
        assert_eq!(refused, None);
        let batch = batch.unwrap();
        let h = kafscale_codec::batch::BatchHeader::parse(&batch).unwrap();
        assert_eq!((h.record_count, h.max_timestamp), (1, 7));
        let last = set.len() - 1;
        set[last] ^= 1;
        assert_eq!(
            upconvert(Some(Bytes::from(set)), 1 << 20),
            (None, Some(crate::errors::CORRUPT_MESSAGE))
        );
    }

    /// CRC-32 (IEEE), computed bit by bit: independent of the codec's.
    fn crc32_ieee(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}
