//! `e2e`: producers and a consumer at once. Every message carries the run's id
//! and its send time (µs since the Unix epoch); the consumer's clock minus that is
//! the end-to-end latency. Both run on this machine, so they share the clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::E2eArgs;
use crate::client::{consumer_config, ensure_topic};
use crate::consume::partitions;
use crate::error::{BenchError, Result};
use crate::produce::{self, unix_micros, STAMP_LEN};
use crate::report::E2eReport;
use crate::stats::{latency_histogram, percentiles, record_us};

/// The send time in a message of run `run_id`, or `None` for any other message.
pub fn stamp_of(payload: &[u8], run_id: u64) -> Option<u64> {
    let id = payload.get(..8)?;
    let ts = payload.get(8..STAMP_LEN)?;
    if id != run_id.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(ts.try_into().ok()?))
}

pub fn run(a: &E2eArgs) -> Result<E2eReport> {
    a.load.validate(STAMP_LEN).map_err(BenchError::Invalid)?;
    let topic = &a.common.topic;
    ensure_topic(&a.common, topic, a.load.partitions)?;
    let mut cfg = consumer_config(&a.common);
    cfg.set("group.id", "kafscale-bench-e2e")
        // Fetch as soon as anything is there: this measures latency, not batching.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1");
    let consumer: BaseConsumer = cfg.create()?;
    // Start at each partition's current end, resolved now: a lazily resolved
    // "latest" could skip the first messages of the run.
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions(&consumer, topic)? {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    let run_id = unix_micros() ^ (u64::from(std::process::id()) << 40);
    let received = Arc::new(AtomicU64::new(0));
    let produced_done = Arc::new(AtomicBool::new(false));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let drain = Duration::from_secs_f64(a.drain.max(0.0));
    let reader = {
        let (received, done, target) = (received.clone(), produced_done.clone(), target.clone());
        std::thread::spawn(move || -> Result<_> {
            let mut hist = latency_histogram();
            let mut drain_until: Option<Instant> = None;
            loop {
                let n = received.load(Ordering::Relaxed);
                if n >= target.load(Ordering::Relaxed) {
                    break;
                }
                if done.load(Ordering::Relaxed) {
                    let until = *drain_until.get_or_insert_with(|| Instant::now() + drain);
                    if Instant::now() >= until {
                        break;
                    }
                }
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let now = unix_micros();
                        if let Some(sent) = m.payload().and_then(|p| stamp_of(p, run_id)) {
                            record_us(&mut hist, now.saturating_sub(sent));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => {}
                }
            }
            Ok(hist)
        })
    };
    let produced = produce::run(&a.common, &a.load, Some(run_id));
    if let Ok(p) = &produced {
        target.store(p.messages, Ordering::Relaxed);
    }
    produced_done.store(true, Ordering::Relaxed);
    let hist = reader
        .join()
        .map_err(|_| BenchError::Panicked("consumer"))??;
    let produced = produced?;
    Ok(E2eReport {
        produced,
        received: received.load(Ordering::Relaxed),
        e2e_latency: percentiles(&hist),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_matched_by_run_id() {
        let mut p = vec![0u8; 32];
        p[..8].copy_from_slice(&42u64.to_be_bytes());
        p[8..16].copy_from_slice(&1_700_000_000_000_000u64.to_be_bytes());
        assert_eq!(stamp_of(&p, 42), Some(1_700_000_000_000_000));
        assert_eq!(stamp_of(&p, 43), None);
        assert_eq!(stamp_of(&p[..12], 42), None);
        assert_eq!(stamp_of(&[], 42), None);
    }
}
