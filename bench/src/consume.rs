//! `consume`: one librdkafka consumer, assigned every partition or a member of a
//! group, counting messages and value bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::{ConsumeArgs, StartFrom};
use crate::client::{consumer_config, Progress};
use crate::error::{BenchError, Result};
use crate::report::ConsumeReport;
use crate::stats::{mb_per_sec, per_sec};

/// Partition count of `topic` as the broker reports it.
pub fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<i32> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics().first().map_or(0, |t| t.partitions().len());
    if n == 0 {
        return Err(BenchError::NoPartitions(topic.to_string()));
    }
    i32::try_from(n).map_err(|_| BenchError::Invalid(format!("{n} partitions")))
}

pub fn run(a: &ConsumeArgs) -> Result<ConsumeReport> {
    let mut cfg = consumer_config(&a.common);
    let reset = match a.from {
        StartFrom::Earliest => "earliest",
        StartFrom::Latest => "latest",
    };
    cfg.set("auto.offset.reset", reset).set(
        "group.id",
        a.group.as_deref().unwrap_or("kafscale-bench-assign"),
    );
    let consumer: BaseConsumer = cfg.create()?;
    if a.group.is_some() {
        consumer.subscribe(&[a.common.topic.as_str()])?;
    } else {
        let offset = match a.from {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions(&consumer, &a.common.topic)? {
            tpl.add_partition_offset(&a.common.topic, p, offset)?;
        }
        consumer.assign(&tpl)?;
    }
    let count = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("consumed", count.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration.max(0.0));
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while Instant::now() < deadline && a.messages.is_none_or(|m| n < m) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                first.get_or_insert(last);
                n += 1;
                bytes += m.payload().map_or(0, |p| p.len()) as u64;
                count.store(n, Ordering::Relaxed);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    drop(progress);
    // From the first message to the last, so neither connection set-up, a group's
    // rebalance nor waiting at the end of the log is counted.
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok(ConsumeReport {
        messages: n,
        bytes,
        seconds: secs,
        msgs_per_sec: per_sec(n, secs),
        mb_per_sec: mb_per_sec(bytes, secs),
    })
}
