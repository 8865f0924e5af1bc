//! Per-shard counters and levels: the observability layer's data, a leaf that
//! every other layer may record into. Counters live in each shard as plain
//! `Cell`s, touched only by that shard's thread, so recording is a few non-atomic
//! adds. A scrape asks every shard for a `Snapshot` (a `Send` copy of its
//! counters and levels) and merges them; nothing is shared on the hot path. The
//! exposition (Prometheus text) is the HTTP edge's business (`http/metrics.rs`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka API keys counted; keys at or above this are not recorded (none exist today).
pub const MAX_API_KEY: usize = 96;
/// Upper bounds of the request latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const NB: usize = LATENCY_BUCKETS.len();

/// One API's request count and latency histogram (non-cumulative buckets; the
/// last slot counts requests slower than the largest bound), and for admin APIs
/// the requests answered with an error.
#[derive(Default)]
struct ApiCells {
    count: Cell<u64>,
    errors: Cell<u64>,
    sum_micros: Cell<u64>,
    buckets: [Cell<u64>; NB + 1],
}

/// Requests per second over a sliding window: one slot per second, each tagged
/// with the second it counts, so stale slots are recognised without a timer.
struct RateWindow {
    slots: Box<[(Cell<u64>, Cell<u64>)]>,
}

impl RateWindow {
    fn new(window_sec: u64) -> Self {
        RateWindow {
            slots: (0..window_sec.max(1))
                .map(|_| (Cell::new(u64::MAX), Cell::new(0)))
                .collect(),
        }
    }

    fn record(&self, sec: u64) {
        let (tag, n) = &self.slots[(sec % self.slots.len() as u64) as usize];
        if tag.get() != sec {
            tag.set(sec);
            n.set(0);
        }
        n.set(n.get() + 1);
    }

    /// Requests counted in the window ending at second `now` (inclusive).
    fn total(&self, now: u64) -> u64 {
        let w = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|(tag, _)| tag.get() <= now && now - tag.get() < w)
            .map(|(_, n)| n.get())
            .sum()
    }
}

/// Why the broker closed (or refused) a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Refused at accept: `KAFSCALE_MAX_CONNECTIONS` open.
    MaxConnections,
    /// Refused at accept: `KAFSCALE_MAX_CONNECTIONS_PER_IP` open from its address.
    MaxConnectionsPerIp,
    /// Nothing read, answered or in progress for `KAFSCALE_CONNECTIONS_MAX_IDLE_MS`.
    Idle,
    /// A started request not complete within `KAFSCALE_REQUEST_READ_TIMEOUT_MS`.
    RequestReadTimeout,
    /// A frame above `KAFSCALE_MAX_REQUEST_BYTES` (or the non-produce limit).
    RequestTooLarge,
}

impl CloseReason {
    pub const ALL: [CloseReason; 5] = [
        CloseReason::MaxConnections,
        CloseReason::MaxConnectionsPerIp,
        CloseReason::Idle,
        CloseReason::RequestReadTimeout,
        CloseReason::RequestTooLarge,
    ];

    /// The `reason` label of `kafscale_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::MaxConnections => "max_connections",
            CloseReason::MaxConnectionsPerIp => "max_connections_per_ip",
            CloseReason::Idle => "idle",
            CloseReason::RequestReadTimeout => "request_read_timeout",
            CloseReason::RequestTooLarge => "request_too_large",
        }
    }
}

/// The counters of one shard. Its times (request latency, the throughput
/// window) are real time, not the broker's `Clock`: they measure what really
/// elapsed.
pub struct ShardMetrics {
    started: Instant,
    window_sec: u64,
    apis: Box<[ApiCells]>,
    produce_bytes: RefCell<HashMap<Arc<str>, Cell<u64>>>,
    fetch_bytes: RefCell<HashMap<Arc<str>, Cell<u64>>>,
    produce_rate: RateWindow,
    fetch_rate: RateWindow,
    pub cache_hits: Cell<u64>,
    pub cache_misses: Cell<u64>,
    /// The log cleaner (compacted topics): object bytes read and written,
    /// segments replaced, cleanings committed.
    pub cleaner_bytes_read: Cell<u64>,
    pub cleaner_bytes_written: Cell<u64>,
    pub cleaner_segments_rewritten: Cell<u64>,
    pub cleaner_runs: Cell<u64>,
    pub open_connections: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    closed: [Cell<u64>; CloseReason::ALL.len()],
}

fn add_topic(map: &RefCell<HashMap<Arc<str>, Cell<u64>>>, topic: &Arc<str>, n: u64) {
    let mut m = map.borrow_mut();
    // Lookup by &str: a topic seen before costs no allocation and no refcount.
    match m.get(topic.as_ref()) {
        Some(c) => c.set(c.get() + n),
        None => {
            m.insert(topic.clone(), Cell::new(n));
        }
    }
}

impl ShardMetrics {
    pub fn new(window_sec: u64) -> Self {
        ShardMetrics {
            started: Instant::now(),
            window_sec: window_sec.max(1),
            apis: (0..MAX_API_KEY).map(|_| ApiCells::default()).collect(),
            produce_bytes: RefCell::new(HashMap::new()),
            fetch_bytes: RefCell::new(HashMap::new()),
            produce_rate: RateWindow::new(window_sec),
            fetch_rate: RateWindow::new(window_sec),
            cache_hits: Cell::new(0),
            cache_misses: Cell::new(0),
            cleaner_bytes_read: Cell::new(0),
            cleaner_bytes_written: Cell::new(0),
            cleaner_segments_rewritten: Cell::new(0),
            cleaner_runs: Cell::new(0),
            open_connections: Cell::new(0),
            connections_accepted: Cell::new(0),
            closed: Default::default(),
        }
    }

    /// Counts a connection the broker closed or refused, by why.
    pub fn connection_closed(&self, why: CloseReason) {
        let c = &self.closed[why as usize];
        c.set(c.get() + 1);
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// Records one handled request of API `api` that took `took`, finished at
    /// `now`; `failed`: an admin response that carries an error code.
    pub fn record_request(&self, api: i16, took: Duration, now: Instant, failed: bool) {
        let Some(a) = usize::try_from(api).ok().and_then(|i| self.apis.get(i)) else {
            return;
        };
        a.count.set(a.count.get() + 1);
        if failed {
            a.errors.set(a.errors.get() + 1);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        a.sum_micros.set(a.sum_micros.get().saturating_add(micros));
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(NB);
        a.buckets[i].set(a.buckets[i].get() + 1);
        let sec = self.second(now);
        if api == kafka_protocol::messages::ApiKey::Produce as i16 {
            self.produce_rate.record(sec);
        } else if api == kafka_protocol::messages::ApiKey::Fetch as i16 {
            self.fetch_rate.record(sec);
        }
    }

    pub fn add_produce_bytes(&self, topic: &Arc<str>, n: u64) {
        add_topic(&self.produce_bytes, topic, n);
    }

    pub fn add_fetch_bytes(&self, topic: &Arc<str>, n: u64) {
        add_topic(&self.fetch_bytes, topic, n);
    }

    /// A `Send` copy of the counters; `gauges`, `partitions` and `groups` are the
    /// shard's current levels.
    pub fn snapshot(
        &self,
        gauges: ShardGauges,
        partitions: Vec<PartitionLevels>,
        groups: Vec<GroupLevels>,
    ) -> Snapshot {
        let now = self.second(Instant::now());
        let topics = |m: &RefCell<HashMap<Arc<str>, Cell<u64>>>| {
            m.borrow()
                .iter()
                .map(|(k, v)| (k.to_string(), v.get()))
                .collect()
        };
        Snapshot {
            apis: self
                .apis
                .iter()
                .enumerate()
                .filter(|(_, a)| a.count.get() > 0)
                .map(|(i, a)| {
                    (
                        i as i16,
                        ApiSnapshot {
                            count: a.count.get(),
                            errors: a.errors.get(),
                            sum_micros: a.sum_micros.get(),
                            buckets: a.buckets.iter().map(Cell::get).collect(),
                        },
                    )
                })
                .collect(),
            produce_bytes: topics(&self.produce_bytes),
            fetch_bytes: topics(&self.fetch_bytes),
            produce_in_window: self.produce_rate.total(now),
            fetch_in_window: self.fetch_rate.total(now),
            window_sec: self.window_sec,
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            cleaner: [
                self.cleaner_bytes_read.get(),
                self.cleaner_bytes_written.get(),
                self.cleaner_segments_rewritten.get(),
                self.cleaner_runs.get(),
            ],
            open_connections: self.open_connections.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_closed: self.closed.iter().map(Cell::get).collect(),
            // Broker-wide: the shard fills them in (`Shard::metrics_snapshot`).
            request_bytes: 0,
            request_memory_waits: 0,
            shards: vec![gauges],
            partitions,
            groups,
        }
    }
}

/// Levels a shard reports alongside its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShardGauges {
    pub shard: usize,
    pub buffered_bytes: u64,
    pub upload_queue: u64,
    pub uploads_in_flight: u64,
    /// Sealed segments waiting for or in upload, and their bytes.
    pub pending_segments: u64,
    pub pending_bytes: u64,
}

/// Offsets of one partition the shard has open.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLevels {
    pub topic: String,
    pub partition: i32,
    pub log_start: i64,
    /// The next offset to assign (one past the last appended).
    pub log_end: i64,
    /// One past the last durable offset.
    pub high_watermark: i64,
}

/// One consumer group the shard coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLevels {
    pub group: String,
    pub members: u64,
    /// `(topic, partition, committed offset)`.
    pub committed: Vec<(String, i32, i64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSnapshot {
    pub count: u64,
    pub errors: u64,
    pub sum_micros: u64,
    pub buckets: Vec<u64>,
}

/// Counters of one shard, or the sum of several.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub apis: BTreeMap<i16, ApiSnapshot>,
    pub produce_bytes: BTreeMap<String, u64>,
    pub fetch_bytes: BTreeMap<String, u64>,
    pub produce_in_window: u64,
    pub fetch_in_window: u64,
    pub window_sec: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Cleaner counters: bytes read, bytes written, segments rewritten, runs.
    pub cleaner: [u64; 4],
    pub open_connections: u64,
    pub connections_accepted: u64,
    /// Connections closed or refused by the broker, by `CloseReason` (its index).
    pub connections_closed: Vec<u64>,
    /// Bytes of requests held now, broker-wide (every shard reports the same).
    pub request_bytes: u64,
    /// Times a connection paused reading for the request byte budget, broker-wide.
    pub request_memory_waits: u64,
    pub shards: Vec<ShardGauges>,
    pub partitions: Vec<PartitionLevels>,
    pub groups: Vec<GroupLevels>,
}

impl Snapshot {
    /// Adds another shard's counters to these.
    pub fn merge(&mut self, o: Snapshot) {
        for (k, a) in o.apis {
            let e = self.apis.entry(k).or_default();
            e.count += a.count;
            e.errors += a.errors;
            e.sum_micros = e.sum_micros.saturating_add(a.sum_micros);
            if e.buckets.len() < a.buckets.len() {
                e.buckets.resize(a.buckets.len(), 0);
            }
            for (x, y) in e.buckets.iter_mut().zip(a.buckets) {
                *x += y;
            }
        }
        for (t, n) in o.produce_bytes {
            *self.produce_bytes.entry(t).or_default() += n;
        }
        for (t, n) in o.fetch_bytes {
            *self.fetch_bytes.entry(t).or_default() += n;
        }
        self.produce_in_window += o.produce_in_window;
        self.fetch_in_window += o.fetch_in_window;
        self.window_sec = self.window_sec.max(o.window_sec);
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        for (a, b) in self.cleaner.iter_mut().zip(o.cleaner) {
            *a += b;
        }
        self.open_connections += o.open_connections;
        self.connections_accepted += o.connections_accepted;
        if self.connections_closed.len() < o.connections_closed.len() {
            self.connections_closed
                .resize(o.connections_closed.len(), 0);
        }
        for (x, y) in self.connections_closed.iter_mut().zip(o.connections_closed) {
            *x += y;
        }
        // Broker-wide values, read by each shard: not summed.
        self.request_bytes = self.request_bytes.max(o.request_bytes);
        self.request_memory_waits = self.request_memory_waits.max(o.request_memory_waits);
        self.shards.extend(o.shards);
        // Each partition and group has one owning shard: no sums needed.
        self.partitions.extend(o.partitions);
        self.groups.extend(o.groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_forgets_old_seconds() {
        let w = RateWindow::new(3);
        w.record(0);
        w.record(1);
        w.record(1);
        assert_eq!(w.total(1), 3);
        assert_eq!(w.total(2), 3);
        assert_eq!(w.total(3), 2);
        w.record(4); // reuses slot of second 1
        assert_eq!(w.total(4), 1);
        assert_eq!(w.total(10), 0);
    }
}
