//! What the client commands share: topic creation, the librdkafka settings
//! common to every run, and the progress line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::cli::Common;
use crate::error::{BenchError, Result};

/// Creates `topic` with `partitions` partitions; an existing topic is kept as it is
/// (brokers that do not auto-create topics, such as Tansu, need this).
pub fn ensure_topic(common: &Common, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        common.client_config(ClientConfig::new()).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in block_on(admin.create_topics([&new], &opts))? {
        if let Err((name, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(BenchError::CreateTopic {
                    topic: name,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Blocks on a future by polling it with a thread-parking waker; the admin
/// client's futures are completed by librdkafka's own thread, so no runtime is needed.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
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

/// Settings of every consumer: large fetches, so the client is not what limits a
/// read benchmark.
pub fn consumer_config(common: &Common) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("fetch.wait.max.ms", "100");
    common.client_config(c)
}

/// Prints `[  3.0s] <what> <n> (+<delta>/s)` on stderr once a second until stopped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(what: &'static str, counter: Arc<AtomicU64>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = 0;
            let mut next = start + Duration::from_secs(1);
            while !s.load(Ordering::Relaxed) {
                // Short sleeps, so stopping does not wait for a whole second.
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() < next {
                    continue;
                }
                next += Duration::from_secs(1);
                let n = counter.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.1}s] {what} {n} (+{}/s)",
                    start.elapsed().as_secs_f64(),
                    n.saturating_sub(last)
                );
                last = n;
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
