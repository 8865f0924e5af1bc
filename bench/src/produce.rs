//! `produce`: producer threads (one librdkafka client each) sending at a target
//! rate or as fast as the client can, and the send → acknowledgement histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::cli::{Common, Keys, Load};
use crate::client::{ensure_topic, Progress};
use crate::error::{BenchError, Result};
use crate::report::ProduceReport;
use crate::stats::{latency_histogram, mb_per_sec, per_sec, percentiles, record_us};

/// Bytes at the start of an `e2e` message: the run's id, then the send time.
pub const STAMP_LEN: usize = 16;

/// Microseconds since the Unix epoch (the clock the consumer compares against).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Delivery reports carry the send time (µs since the run started) as their opaque.
struct Ctx {
    start: Instant,
    hist: Mutex<Histogram<u64>>,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        match result {
            Ok(_) => {
                let now = self.start.elapsed().as_micros() as u64;
                if let Ok(mut h) = self.hist.lock() {
                    record_us(&mut h, now.saturating_sub(sent_us as u64));
                }
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Messages producer `id` of `n` sends so that together they send exactly `total`.
pub fn share(total: u64, n: usize, id: usize) -> u64 {
    let n = n.max(1) as u64;
    total / n + u64::from((id as u64) < total % n)
}

/// A small xorshift generator: random keys without a dependency or a lock.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn producer_config(common: &Common, load: &Load) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("acks", load.acks.as_str())
        .set("linger.ms", load.linger_ms.to_string())
        .set("batch.size", load.batch_size.to_string())
        .set("compression.type", load.compression.as_str())
        // A bounded queue, so saturation runs measure the broker, not a deep client backlog.
        .set("queue.buffering.max.kbytes", "131072")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000");
    common.client_config(c)
}

/// Runs the producers of `load`; with `stamp`, every message starts with the run
/// id and its send time (for `e2e`). Returns when every message is acknowledged
/// or has failed.
pub fn run(common: &Common, load: &Load, stamp: Option<u64>) -> Result<ProduceReport> {
    load.validate(if stamp.is_some() { STAMP_LEN } else { 0 })
        .map_err(BenchError::Invalid)?;
    ensure_topic(common, &common.topic, load.partitions)?;
    let start = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = (load.duration > 0.0).then(|| start + Duration::from_secs_f64(load.duration));
    let per_producer_rate = load.rate as f64 / load.producers as f64;
    let mut threads = Vec::new();
    for id in 0..load.producers {
        let ctx = Ctx {
            start,
            hist: Mutex::new(latency_histogram()),
            acked: acked.clone(),
            errors: errors.clone(),
        };
        let producer: BaseProducer<Ctx> = producer_config(common, load).create_with_context(ctx)?;
        let limit = load.messages.map(|m| share(m, load.producers, id));
        let topic = common.topic.clone();
        let (size, keys) = (load.message_size, load.keys);
        let errors = errors.clone();
        threads.push(std::thread::spawn(move || {
            let mut payload = vec![0x5au8; size];
            if let Some(run_id) = stamp {
                payload[..8].copy_from_slice(&run_id.to_be_bytes());
            }
            let mut i: u64 = 0;
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1));
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) || limit.is_some_and(|l| i >= l) {
                    break;
                }
                if per_producer_rate > 0.0 {
                    let due = start + Duration::from_secs_f64(i as f64 / per_producer_rate);
                    let now = Instant::now();
                    if due > now {
                        producer.poll(Duration::ZERO);
                        std::thread::sleep((due - now).min(Duration::from_millis(5)));
                        continue;
                    }
                }
                let key = match keys {
                    Keys::None => None,
                    Keys::Random => Some(rng.next().to_be_bytes()),
                    Keys::Sequential => Some(i.to_be_bytes()),
                };
                if stamp.is_some() {
                    payload[8..STAMP_LEN].copy_from_slice(&unix_micros().to_be_bytes());
                }
                let sent_us = start.elapsed().as_micros() as usize;
                let mut rec = BaseRecord::with_opaque_to(&topic, sent_us).payload(&payload[..]);
                if let Some(k) = key.as_ref() {
                    rec = rec.key(&k[..]);
                }
                match producer.send(rec) {
                    Ok(()) => {
                        i += 1;
                        if i.is_multiple_of(256) {
                            producer.poll(Duration::ZERO);
                        }
                    }
                    // The client's queue is full: serve delivery reports, then retry.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(5));
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                }
            }
            let _ = producer.flush(Duration::from_secs(60));
            let h = producer
                .context()
                .hist
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| latency_histogram());
            h
        }));
    }
    let progress = Progress::start("acked", acked.clone());
    let mut hist = latency_histogram();
    for t in threads {
        let h = t.join().map_err(|_| BenchError::Panicked("producer"))?;
        hist.add(&h)
            .map_err(|e| BenchError::Histogram(e.to_string()))?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(progress);
    let n = acked.load(Ordering::Relaxed);
    let bytes = n * load.message_size as u64;
    Ok(ProduceReport {
        messages: n,
        errors: errors.load(Ordering::Relaxed),
        bytes,
        seconds: secs,
        msgs_per_sec: per_sec(n, secs),
        mb_per_sec: mb_per_sec(bytes, secs),
        latency: percentiles(&hist),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_total() {
        for (total, n) in [(700u64, 3usize), (5, 8), (0, 2), (1_000_001, 4), (9, 1)] {
            let parts: Vec<u64> = (0..n).map(|i| share(total, n, i)).collect();
            assert_eq!(parts.iter().sum::<u64>(), total, "{total} over {n}");
            let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            assert!(hi - lo <= 1, "{parts:?}");
        }
    }

    #[test]
    fn xorshift_keys_differ() {
        let mut r = XorShift(1);
        let a: Vec<u64> = (0..100).map(|_| r.next()).collect();
        let mut d = a.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 100);
    }
}
