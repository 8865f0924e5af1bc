//! What the BrokerControl RPCs do on the shards. Each RPC starts on the
//! metadata shard, which checks the selection against its cluster view and runs
//! the work on every shard with `Shard::on_all`; each shard acts on the
//! partitions it owns.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{join_all, Either};
use kafscale_proto::control::{PartitionOffsets, PartitionStatus, ShardStatus, TopicPartitions};

use crate::errors::UNKNOWN_TOPIC_OR_PARTITION;
use crate::partition::{self, Partition};
use crate::placement::partition_shard;
use crate::shard::Shard;

/// Partitions an RPC acts on: `None` means every partition.
pub type Selection = Option<Vec<(String, i32)>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("shard {0} did not answer")]
    ShardGone(usize),
    /// The metadata store did not take the change (retriable).
    #[error("{0}")]
    Unavailable(String),
}

/// Expands a request's topics into (topic, partition) pairs, sorted and without
/// repeats; a topic without partitions means all of its partitions.
/// `partitions_of` gives a topic's partition count, `None` for an unknown topic.
pub fn expand(
    topics: &[TopicPartitions],
    partitions_of: impl Fn(&str) -> Option<i32>,
) -> Result<Selection, ControlError> {
    if topics.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeSet::new();
    for t in topics {
        if t.topic.is_empty() {
            return Err(ControlError::InvalidArgument("empty topic name".into()));
        }
        let n = partitions_of(&t.topic)
            .ok_or_else(|| ControlError::NotFound(format!("unknown topic {:?}", t.topic)))?;
        if t.partitions.is_empty() {
            out.extend((0..n).map(|p| (t.topic.clone(), p)));
        }
        for &p in &t.partitions {
            if p < 0 || p >= n {
                return Err(ControlError::NotFound(format!(
                    "topic {:?} has no partition {p} (it has {n})",
                    t.topic
                )));
            }
            out.insert((t.topic.clone(), p));
        }
    }
    Ok(Some(out.into_iter().collect()))
}

/// Checks a request's selection on the shard that received it.
pub fn select(sh: &Shard, topics: &[TopicPartitions]) -> Result<Selection, ControlError> {
    let cluster = sh.cluster();
    expand(topics, |t| cluster.topic(t).map(|m| m.partitions))
}

/// The partitions of `sel` this shard owns, loaded; with no selection, the ones
/// already loaded. Partitions that cannot be loaded come back with their error.
async fn owned(sh: &Rc<Shard>, sel: &Selection) -> Vec<Result<Rc<Partition>, (String, i32, i16)>> {
    match sel {
        None => {
            let mut v: Vec<Rc<Partition>> = sh
                .logs
                .open_partitions()
                .into_iter()
                .filter(|p| p.loaded())
                .collect();
            v.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
            v.into_iter().map(Ok).collect()
        }
        Some(list) => {
            let mut out = Vec::new();
            for (t, i) in list {
                if partition_shard(t, *i, sh.count) != sh.id {
                    continue;
                }
                out.push(
                    partition::partition(&sh.logs, t, *i)
                        .await
                        .map_err(|e| (t.clone(), *i, e.code())),
                );
            }
            out
        }
    }
}

fn status_of(sh: &Shard, p: &Partition) -> PartitionStatus {
    let s = p.status();
    PartitionStatus {
        topic: p.topic.to_string(),
        partition: p.index,
        shard: sh.id as u32,
        loaded: true,
        log_start_offset: s.log_start,
        high_watermark: s.high_watermark,
        log_end_offset: s.log_end,
        unflushed_bytes: s.unflushed_bytes as u64,
        upload_queue_segments: s.pending_segments as u32,
        upload_queue_bytes: s.pending_bytes as u64,
        draining: s.draining || sh.logs.draining_all(),
    }
}

fn not_loaded(sh: &Shard, topic: &str, partition: i32) -> PartitionStatus {
    PartitionStatus {
        topic: topic.to_string(),
        partition,
        shard: sh.id as u32,
        loaded: false,
        log_start_offset: -1,
        high_watermark: -1,
        log_end_offset: -1,
        unflushed_bytes: 0,
        upload_queue_segments: 0,
        upload_queue_bytes: 0,
        draining: sh.logs.draining_all(),
    }
}

/// This shard's part of GetStatus.
pub async fn shard_status(sh: Rc<Shard>, sel: Selection) -> (ShardStatus, Vec<PartitionStatus>) {
    let mut parts = Vec::new();
    match &sel {
        Some(_) => {
            for r in owned(&sh, &sel).await {
                parts.push(match r {
                    Ok(p) => status_of(&sh, &p),
                    Err((t, i, _)) => not_loaded(&sh, &t, i),
                });
            }
        }
        None => {
            // Every partition this shard owns, loaded or not: listing must not
            // load thousands of partitions from the object store.
            let cluster = sh.cluster();
            for t in cluster.topics.values() {
                for i in 0..t.partitions {
                    if partition_shard(&t.name, i, sh.count) != sh.id {
                        continue;
                    }
                    parts.push(
                        match sh.logs.open_partition(&t.name, i).filter(|p| p.loaded()) {
                            Some(p) => status_of(&sh, &p),
                            None => not_loaded(&sh, &t.name, i),
                        },
                    );
                }
            }
        }
    }
    let loaded = sh
        .logs
        .open_partitions()
        .iter()
        .filter(|p| p.loaded())
        .count();
    let levels = sh.logs.levels();
    let shard = ShardStatus {
        shard: sh.id as u32,
        unflushed_bytes: levels.buffered_bytes as u64,
        upload_queue_depth: levels.upload_queue as u64,
        uploads_in_flight: levels.uploads_in_flight as u64,
        partitions: loaded as u32,
        draining_all: sh.logs.draining_all(),
    };
    (shard, parts)
}

fn offsets(p: &Partition, error: String) -> PartitionOffsets {
    let s = p.status();
    PartitionOffsets {
        topic: p.topic.to_string(),
        partition: p.index,
        log_start_offset: s.log_start,
        high_watermark: s.high_watermark,
        log_end_offset: s.log_end,
        error,
    }
}

fn failed(topic: String, partition: i32, error: String) -> PartitionOffsets {
    PartitionOffsets {
        topic,
        partition,
        log_start_offset: -1,
        high_watermark: -1,
        log_end_offset: -1,
        error,
    }
}

fn code_name(code: i16) -> String {
    if code == UNKNOWN_TOPIC_OR_PARTITION {
        "the topic was deleted".into()
    } else {
        format!("partition unavailable (Kafka error {code})")
    }
}

/// Seals each partition's open segment and waits until everything it held when
/// this was called is durable, or the deadline passes.
async fn flush_all(
    sh: &Rc<Shard>,
    parts: Vec<Rc<Partition>>,
    deadline: Instant,
) -> Vec<PartitionOffsets> {
    let waits = parts.into_iter().map(|p| {
        let target = p.status().log_end;
        partition::seal(&sh.logs, &p);
        async move {
            let wait = p.durable_to(target);
            let timer = sh.clock().sleep_until(deadline);
            futures::pin_mut!(wait, timer);
            let error = match futures::future::select(wait, timer).await {
                Either::Left((Ok(()), _)) => String::new(),
                Either::Left((Err(e), _)) => code_name(e.code()),
                Either::Right(_) => format!(
                    "not durable within the timeout: offsets below {target} were appended, below {} are durable",
                    p.status().high_watermark
                ),
            };
            offsets(&p, error)
        }
    });
    join_all(waits).await
}

/// This shard's part of TriggerFlush (and of DrainPartitions once the
/// partitions refuse writes).
pub async fn shard_flush(
    sh: Rc<Shard>,
    sel: Selection,
    timeout: Duration,
) -> Vec<PartitionOffsets> {
    let deadline = sh.clock().now() + timeout;
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for r in owned(&sh, &sel).await {
        match r {
            Ok(p) => parts.push(p),
            Err((t, i, code)) => out.push(failed(t, i, code_name(code))),
        }
    }
    out.extend(flush_all(&sh, parts, deadline).await);
    out
}

/// This shard's part of DrainPartitions: refuse writes, then flush.
pub async fn shard_drain(
    sh: Rc<Shard>,
    sel: Selection,
    timeout: Duration,
) -> Vec<PartitionOffsets> {
    let deadline = sh.clock().now() + timeout;
    let mut out = Vec::new();
    let mut parts = Vec::new();
    if sel.is_none() {
        sh.logs.set_draining_all(true);
    }
    for r in owned(&sh, &sel).await {
        match r {
            Ok(p) => {
                if sel.is_some() {
                    p.set_draining(true);
                }
                parts.push(p);
            }
            Err((t, i, code)) => out.push(failed(t, i, code_name(code))),
        }
    }
    // Appends run on this thread without awaiting between the drain check and
    // the copy, so from here on nothing is added to these partitions.
    out.extend(flush_all(&sh, parts, deadline).await);
    out
}

/// Marks the whole broker as drained (or not) in the metadata store, so a
/// cluster's controller assigns it nothing while drained. Nothing to do alone.
pub async fn set_broker_draining(sh: &Rc<Shard>, on: bool) -> Result<(), ControlError> {
    let meta = sh.meta.clone();
    sh.io
        .call(async move { meta.set_draining(on).await })
        .await
        .map_err(|e| ControlError::Unavailable(format!("marking the broker drained: {e}")))
}

/// This shard's part of ResumePartitions: the partitions that were drained.
pub async fn shard_resume(sh: Rc<Shard>, sel: Selection) -> (bool, Vec<PartitionOffsets>) {
    let was_all = sel.is_none() && sh.logs.set_draining_all(false);
    let mut out = Vec::new();
    for p in owned(&sh, &sel).await.into_iter().flatten() {
        if p.set_draining(false) {
            out.push(offsets(&p, String::new()));
        }
    }
    (was_all, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partitions: &[i32]) -> TopicPartitions {
        TopicPartitions {
            topic: topic.into(),
            partitions: partitions.to_vec(),
        }
    }

    fn counts(t: &str) -> Option<i32> {
        match t {
            "a" => Some(3),
            "b" => Some(1),
            _ => None,
        }
    }

    #[test]
    fn empty_selection_means_everything() {
        assert_eq!(expand(&[], counts), Ok(None));
    }

    #[test]
    fn topics_expand_to_sorted_unique_partitions() {
        let got = expand(&[tp("b", &[]), tp("a", &[2, 0]), tp("a", &[0])], counts).unwrap();
        assert_eq!(
            got,
            Some(vec![("a".into(), 0), ("a".into(), 2), ("b".into(), 0)])
        );
        let all = expand(&[tp("a", &[])], counts).unwrap().unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn unknown_topics_and_partitions_are_refused() {
        assert!(matches!(
            expand(&[tp("zz", &[])], counts),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            expand(&[tp("a", &[3])], counts),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            expand(&[tp("a", &[-1])], counts),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            expand(&[tp("", &[])], counts),
            Err(ControlError::InvalidArgument(_))
        ));
    }
}
