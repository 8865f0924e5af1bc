//! kafscale-bench: produce and consume load against any Kafka-protocol broker,
//! through librdkafka (what most users' clients are built on), so the numbers
//! are the ones users see.

mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use crate::stats::{latency_histogram, mb_per_sec, per_sec, percentiles, Percentiles};

#[derive(Parser, Debug)]
#[command(
    name = "kafscale-bench",
    about = "Kafka-protocol load generator (librdkafka)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Produce messages and report throughput and send-to-acknowledgement latency.
    Produce(ProduceArgs),
    /// Read a topic from the beginning and report throughput.
    Consume(ConsumeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Keys {
    None,
    Random,
    Seq,
}

#[derive(clap::Args, Debug)]
struct ProduceArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    /// Stop after this many messages (per run, all producers together).
    #[arg(long)]
    messages: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages per second for all producers together; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: usize,
    #[arg(long, default_value = "none")]
    compression: String,
    /// Independent producer clients (one thread each).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, value_enum, default_value_t = Keys::Random)]
    keys: Keys,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ConsumeArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Stop after this many messages.
    #[arg(long)]
    messages: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct ProduceReport {
    messages: u64,
    errors: u64,
    bytes: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    latency: Percentiles,
}

#[derive(Serialize, Debug)]
struct ConsumeReport {
    messages: u64,
    bytes: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
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
                    let _ = h.record(now.saturating_sub(sent_us as u64).max(1));
                }
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let fut = admin.create_topics([&new], &opts);
    // A small runtime-free executor: the admin future is driven by librdkafka's thread.
    match futures_lite_block_on(fut) {
        Ok(results) => {
            for r in results {
                if let Err((name, code)) = r {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        return Err(format!("creating {name}: {code}"));
                    }
                }
            }
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Blocks on a future by polling it with a thread-parking waker.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn produce(a: ProduceArgs) -> Result<(), String> {
    ensure_topic(&a.bootstrap, &a.topic, a.partitions)?;
    let start = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = start + Duration::from_secs_f64(a.duration);
    let per_producer_limit = a.messages.map(|m| m.div_ceil(a.producers as u64));
    let per_producer_rate = a.rate as f64 / a.producers as f64;
    let mut threads = Vec::new();
    for id in 0..a.producers {
        let ctx = Ctx {
            start,
            hist: Mutex::new(latency_histogram()),
            acked: acked.clone(),
            errors: errors.clone(),
        };
        let producer: BaseProducer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &a.bootstrap)
            .set("acks", &a.acks)
            .set("linger.ms", a.linger_ms.to_string())
            .set("batch.size", a.batch_size.to_string())
            .set("compression.type", &a.compression)
            // A bounded queue, so saturation runs measure the broker, not a deep client backlog.
            .set("queue.buffering.max.kbytes", "131072")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "60000")
            .create_with_context(ctx)
            .map_err(|e| e.to_string())?;
        let topic = a.topic.clone();
        let size = a.message_size;
        let keys = a.keys;
        let sent = sent.clone();
        threads.push(std::thread::spawn(move || {
            let payload = vec![0x5au8; size];
            let mut i: u64 = 0;
            let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ id as u64;
            loop {
                if Instant::now() >= deadline || per_producer_limit.is_some_and(|l| i >= l) {
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
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = match keys {
                    Keys::None => None,
                    Keys::Random => Some(rng.to_be_bytes()),
                    Keys::Seq => Some(i.to_be_bytes()),
                };
                let sent_us = start.elapsed().as_micros() as usize;
                let mut rec = BaseRecord::with_opaque_to(&topic, sent_us).payload(&payload[..]);
                if let Some(k) = key.as_ref() {
                    rec = rec.key(&k[..]);
                }
                match producer.send(rec) {
                    Ok(()) => {
                        i += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                        if i.is_multiple_of(256) {
                            producer.poll(Duration::ZERO);
                        }
                    }
                    Err((_, _)) => {
                        producer.poll(Duration::from_millis(5));
                    }
                }
            }
            let _ = producer.flush(Duration::from_secs(60));
            let ctx = producer.context();
            ctx.hist
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| latency_histogram())
        }));
    }
    let progress = {
        let acked = acked.clone();
        let stop = deadline;
        std::thread::spawn(move || {
            let mut last = 0;
            while Instant::now() < stop {
                std::thread::sleep(Duration::from_secs(1));
                let n = acked.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.1}s] acked {n} (+{}/s)",
                    start.elapsed().as_secs_f64(),
                    n - last
                );
                last = n;
            }
        })
    };
    let mut hist = latency_histogram();
    for t in threads {
        let h = t
            .join()
            .map_err(|_| "producer thread panicked".to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = progress.join();
    let n = acked.load(Ordering::Relaxed);
    let report = ProduceReport {
        messages: n,
        errors: errors.load(Ordering::Relaxed),
        bytes: n * a.message_size as u64,
        seconds: secs,
        msgs_per_sec: per_sec(n, secs),
        mb_per_sec: mb_per_sec(n * a.message_size as u64, secs),
        latency: percentiles(&hist),
    };
    emit(a.json, &report, || {
        format!(
            "produced {} msgs ({} errors) in {:.2}s: {:.0} msg/s, {:.1} MB/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            report.messages, report.errors, secs, report.msgs_per_sec, report.mb_per_sec,
            report.latency.p50_ms, report.latency.p90_ms, report.latency.p99_ms, report.latency.p999_ms, report.latency.max_ms
        )
    })
}

fn consume(a: ConsumeArgs) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("group.id", "kafscale-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(&a.topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let parts = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if parts == 0 {
        return Err(format!("topic {} has no partitions", a.topic));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(&a.topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.duration);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first = None;
    while Instant::now() < deadline && a.messages.is_none_or(|m| n < m) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                bytes += m.payload().map_or(0, |p| p.len()) as u64;
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    // Measured from the first message, so connection set-up is not counted.
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let report = ConsumeReport {
        messages: n,
        bytes,
        seconds: secs,
        msgs_per_sec: per_sec(n, secs),
        mb_per_sec: mb_per_sec(bytes, secs),
    };
    emit(a.json, &report, || {
        format!(
            "consumed {} msgs in {:.2}s: {:.0} msg/s, {:.1} MB/s",
            n, secs, report.msgs_per_sec, report.mb_per_sec
        )
    })
}

/// Prints a report as one JSON line (`--json`) or as a sentence.
fn emit<T: Serialize>(json: bool, report: &T, text: impl FnOnce() -> String) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Produce(a) => produce(a),
        Cmd::Consume(a) => consume(a),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafscale-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_produce_arguments() {
        let c = Cli::try_parse_from([
            "kafscale-bench",
            "produce",
            "--bootstrap",
            "h:1",
            "--partitions",
            "64",
            "--message-size",
            "16384",
            "--acks",
            "1",
            "--rate",
            "5000",
            "--keys",
            "seq",
            "--json",
        ])
        .unwrap();
        let Cmd::Produce(a) = c.cmd else {
            panic!("not produce")
        };
        assert_eq!(
            (
                a.bootstrap.as_str(),
                a.partitions,
                a.message_size,
                a.acks.as_str(),
                a.rate
            ),
            ("h:1", 64, 16384, "1", 5000)
        );
        assert_eq!(a.keys, Keys::Seq);
        assert!(a.json);
        assert!(Cli::try_parse_from(["kafscale-bench", "produce", "--keys", "bogus"]).is_err());
    }
}
